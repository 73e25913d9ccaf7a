"""Shared fixtures: real models, loaded once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared" / "realaudio"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def cfg():
    """The default profile with the rule policy: most tests are about mechanics and need
    decisions known in advance. The predictor (the shipped default) has its own tests."""
    from duplex.config import load_config

    return load_config(None, [{"policy": {"name": "rules"}}])


@pytest.fixture(scope="session")
def models(cfg):
    """The packaged default models (VAD, pocketsphinx, SmolLM2 via llama.cpp, piper)."""
    from duplex.stages.factory import load_models
    from policies import make_policy

    return load_models(cfg, make_policy)


@pytest.fixture(scope="session")
def vad():
    from duplex.stages.vad import SileroVAD

    return SileroVAD()


@pytest.fixture(scope="session")
def tts(cfg):
    from duplex.stages.tts import PiperTTS

    return PiperTTS(cfg.tts.voice, cfg.tts.speed, cfg.tts.noise_scale, cfg.tts.noise_w)
