"""Recorded sessions: a directory with ``session.json``, ``mic.wav``, ``agent.wav`` and
``events.jsonl``. See the README's "Session format" section."""

FORMAT_VERSION = 1
