"""Recorded sessions: a directory with ``session.json``, ``mic.wav``, ``agent.wav`` and
``events.jsonl`` (format and guarantees in docs/sessions.md).

* :mod:`.recorder` writes one as the conversation happens (crash-safe);
* :mod:`.store` loads one, repairing what a crash leaves behind;
* :mod:`.replay` runs the recorded microphone through the pipeline again, deterministically;
* :mod:`.report` builds the interruption report and diffs decisions;
* :mod:`.scenario` scripts a user against the agent with expected outcomes
  (:mod:`.pytest_plugin` for test suites);
* :mod:`.export` turns a session into a stereo WAV + TSV evaluation case;
* ``duplex replay``, ``duplex test-scenarios`` and ``duplex export-case`` live in
  :mod:`duplex.commands`.
"""

FORMAT_VERSION = 1
