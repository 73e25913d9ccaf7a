"""Bad input gets one line naming the problem and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def duplex(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "duplex.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_help_lists_every_command():
    p = duplex("--help")
    assert p.returncode == 0
    for cmd in ("run", "demo", "talk", "replay", "test-scenarios", "export-case", "bench", "eval-policy",
                "train-policy", "models", "broker", "mqtt"):
        assert cmd in p.stdout


def test_missing_input_wav(tmp_path):
    assert_one_line_error(duplex("run", "--input", str(tmp_path / "nope.wav")), "not found", "nope.wav")


def test_corrupt_input_wav(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    assert_one_line_error(duplex("run", "--input", str(bad)), "cannot read audio file", "bad.wav")


def test_unknown_config_key_and_wrong_type(tmp_path):
    wav = ROOT / "tests" / "data" / "goforward.wav"
    assert_one_line_error(duplex("run", "--input", str(wav), "--set", "llm.bogus=1"), "unknown key 'llm.bogus'")
    assert_one_line_error(duplex("run", "--input", str(wav), "--set", "vad.threshold=high"), "vad.threshold must be a number")
    cfg = tmp_path / "x.toml"
    cfg.write_text("[tts]\nspeed = [1, 2]\n")
    assert_one_line_error(duplex("run", "--input", str(wav), "--config", str(cfg)), "tts.speed", "x.toml")


@pytest.mark.parametrize("args", [["run", "--frobnicate"], ["nonsense"], ["run", "--policy", "magic"]])
def test_bad_flags(args):
    assert_one_line_error(duplex(*args), "error")


def test_bad_simulated_user_script(tmp_path):
    s = tmp_path / "s.toml"
    s.write_text('[[say]]\ntext = "hi"\n')
    assert_one_line_error(duplex("run", "--simulate", str(s), "--no-record"), "needs exactly one of")
