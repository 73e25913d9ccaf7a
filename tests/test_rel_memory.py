"""Memory that a long run must give back (issue 16, part 4): piper's onnxruntime session
runs without its CPU arena and memory patterns, which kept the memory of the longest
sentence ever synthesised for the rest of the process (docs/reliability.md has the
numbers; ``benchmarks/soak.py`` measures a whole session)."""

from __future__ import annotations

import numpy as np

import duplex.stages.tts as tts_module
from duplex.stages.tts import PiperTTS

TEXT = "The moon is about three hundred and eighty thousand kilometres away. Its light reaches us fast."


def test_piper_runs_without_the_onnxruntime_arena(tts):
    opts = tts._voice.session.get_session_options()
    assert not opts.enable_cpu_mem_arena and not opts.enable_mem_pattern


def test_without_the_arena_piper_speaks_the_same_samples(cfg, tts, monkeypatch):
    """Same audio bit for bit, so sessions recorded before the change still replay alike."""
    monkeypatch.setattr(tts_module, "ORT_ARENA", True)
    with_arena = PiperTTS(cfg.tts.voice, cfg.tts.speed, cfg.tts.noise_scale, cfg.tts.noise_w)
    assert with_arena._voice.session.get_session_options().enable_cpu_mem_arena
    a = np.concatenate(list(tts.synthesize(TEXT)))
    b = np.concatenate(list(with_arena.synthesize(TEXT)))
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
