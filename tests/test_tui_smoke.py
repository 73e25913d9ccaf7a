"""Smoke test: ``duplex talk --simulate`` in a real terminal (tmux), read off the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

SCRIPT = """
voice = "piper"
[[say]]
text = "Hello there. Can you tell me something about the moon?"
at = 0.5
"""


SOCKET = f"duplex-smoke-{os.getpid()}"
"""A private tmux server: another tmux on the machine cannot resize or capture our window."""


ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
"""The app sizes itself from COLUMNS/LINES when they are set (they are, under pytest): drop them."""


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], check=True, capture_output=True, text=True,
                          env=ENV).stdout


def wait_for(name: str, predicate, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", name)
        if predicate(screen):
            return screen
        time.sleep(1.0)
    raise AssertionError(f"timed out; the screen was:\n{screen}")


def test_talk_simulate_shows_the_transcript_in_a_terminal(tmp_path) -> None:
    script = tmp_path / "hello.toml"
    script.write_text(SCRIPT)
    out = tmp_path / "session"
    name = "smoke"
    cmd = (f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m duplex.cli talk "
           f"--simulate {shlex.quote(str(script))} --out {shlex.quote(str(out))}; echo EXIT=$?; sleep 600")
    tmux("new-session", "-d", "-s", name, "-x", "130", "-y", "42", cmd)
    assert tmux("display-message", "-p", "-t", name, "#{window_width}x#{window_height}").strip() == "130x42"
    try:
        # The user's words, then the agent's reply, then the end of the conversation.
        screen = wait_for(name, lambda s: "you   hello" in s, timeout=300)
        assert "LISTENING" in screen or "THINKING" in screen or "SPEAKING" in screen
        screen = wait_for(name, lambda s: "ENDED" in s, timeout=240)
        conversation = [line for line in screen.splitlines() if line.startswith("│ ")]
        agent = [line for line in conversation if line[2:].startswith("agent ")]
        assert agent and len(agent[0].split("│")[1].split()) > 2, screen
        assert "m Mute mic" in screen and "? Help" in screen and "q Quit" in screen
        assert "Timing (ms)" in screen and "Signals" in screen and "Events" in screen
        tmux("send-keys", "-t", name, "q")
        screen = wait_for(name, lambda s: "EXIT=" in s, timeout=30)
        assert "EXIT=0" in screen
        assert "session recorded in" in screen
        assert (out / "agent.wav").stat().st_size > 44 and (out / "events.jsonl").stat().st_size > 0
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)
