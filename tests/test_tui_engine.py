"""The terminal UI on the real engine: a scripted user asks, the agent answers, the user cuts in.

The packaged models run the conversation as the app's worker, on the app's loop, in
lockstep (simulated clock); the test reads what the panes showed while it ran.
"""

from __future__ import annotations

import json

from duplex.simuser import SimulatedUser, UserVoice, parse_script
from tui.app import DuplexApp
from tui.session import LiveSession
from tui.widgets import ConversationPane, StateBar

SCRIPT = {
    "say": [
        {"text": "Hello. Can you tell me something about the moon?", "at": 0.3},
        {"text": "Wait, stop. What about Mars?", "after_agent_speech": 1.0},
    ]
}


class Collect:
    def __init__(self, *kinds: type) -> None:
        self.kinds, self.seen = kinds, []

    def __call__(self, msg) -> None:
        if isinstance(msg, self.kinds) and not any(m is msg for m in self.seen):
            self.seen.append(msg)


async def test_real_session_with_a_barge_in(cfg, models, tmp_path) -> None:
    voice, utts = parse_script(SCRIPT)
    user = SimulatedUser(utts, UserVoice(voice, models.tts))
    session = LiveSession(cfg, models, user, tmp_path / "session", title="test")
    hook = Collect(ConversationPane.LineShown, StateBar.StateShown)
    app = DuplexApp(session)
    async with app.run_test(size=(130, 42), message_hook=hook) as pilot:
        for _ in range(6000):
            if app.finished:
                break
            await pilot.pause(0.05)
        assert app.finished and app.finish_error is None
        await pilot.pause()

        events = [json.loads(s) for s in (tmp_path / "session" / "events.jsonl").read_text().splitlines()]
        shown = [m for m in hook.seen if isinstance(m, ConversationPane.LineShown)]
        # The first question: shown as a growing partial, then settled into the final text.
        first = [m for m in shown if m.key == app.conversation.lines[0].key]
        final = next(e["text"] for e in events if e["type"] == "asr_final" and e["utterance"] == 1)
        assert first[0].who == "user" and not first[0].final and first[0].heard
        assert first[-1].final and first[-1].heard == final
        assert first[-1].text == f"you   {final}"

        # The interrupted reply: heard words kept, the rest struck through.
        agent = app.conversation.line("a1")
        assert agent is not None
        line = app.view.transcript.lines["a1"]
        assert line.status == "cut" and line.text and line.unheard
        plain = agent.text.plain
        cut = plain.index(line.unheard)
        assert any("strike" in str(s.style) and s.start <= cut < s.end for s in agent.text.spans)
        heard_at = plain.index(line.text.split()[0])
        assert not any("strike" in str(s.style) and s.start <= heard_at < s.end for s in agent.text.spans)
        # ...and what was heard is exactly what the recording's events say was played.
        played = " ".join(e["text"] for e in events if e["type"] == "audio_played" and e["turn"] == 1 and e["text"])
        assert line.text.split() == played.split()

        # The user's interruption is its own line, marked as the barge-in.
        barge = [w for w in app.view.transcript.lines.values() if w.status == "barge_in"]
        assert len(barge) == 1
        assert any(w in barge[0].text.lower() for w in ("wait", "stop", "mars")), barge[0].text

        # Timing: turn 1 with its voice-to-voice and barge-in reaction; turn 2 answered; p50/p95.
        rows = {r[0]: r for r in app.timing.rows}
        assert {"1", "2", "p50", "p95"} <= set(rows)
        assert rows["1"][5] != "-" and rows["1"][6] != "-"  # V2V, barge

        # The state bar went through every state, overlap included.
        labels = [m.label for m in hook.seen if isinstance(m, StateBar.StateShown)]
        for a, b in (("THINKING", "SPEAKING"), ("SPEAKING", "BOTH"), ("BOTH", "LISTENING")):
            assert a in labels and b in labels[labels.index(a):], labels
        assert labels[-1] == "ENDED"

        # The session was recorded, agent audio included.
        for name in ("mic.wav", "agent.wav", "events.jsonl", "session.json"):
            assert (tmp_path / "session" / name).stat().st_size > 0
        meta = json.loads((tmp_path / "session" / "session.json").read_text())
        assert meta["complete"] and meta["summary"]["barge_ins"] == 1
        # The voices the gate heard with, for the replay (None with the gate off).
        assert "speaker_gate" in meta and (meta["speaker_gate"] is None) == (not cfg.speaker.enabled)
