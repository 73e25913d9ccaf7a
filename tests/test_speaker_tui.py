"""Who is speaking, as the TUI shows it (the state bar's small label, the log) and as
``duplex run`` announces it (one line naming the mode)."""

from __future__ import annotations

from duplex.bus import EventBus
from duplex.config import SpeakerConfig
from duplex.events import OtherSpeaker, SpeakerHeard, UserSpeechEnded, UserSpeechStarted
from duplex.stages.speaker import SpeakerGate, mode_line
from test_speaker_engine import AGENT, USER, FakeEncoder, profile
from tui.app import DuplexApp
from tui.session import EventFeed, SessionInfo
from tui.view import SessionView


def test_view_follows_who_is_speaking():
    view = SessionView()
    view.apply_all([UserSpeechStarted(2.0, agent_speaking=True),
                    SpeakerHeard(2.4, label="other_speaker", sim_user=0.41, sim_agent=0.3, confidence=0.9, window=0.4)])
    assert (view.speaker, view.speaker_sim) == ("other_speaker", 0.41) and "state" in view.take_dirty()
    view.apply(OtherSpeaker(2.4, label="other_speaker", suppressed="barge_in", onset=2.0, sim_user=0.41,
                            sim_agent=0.3, confidence=0.9))
    line = [x for x in view.log if x.kind == "other speaker"][0]
    assert line.severity == "decision" and "another voice kept from barge in" in line.text and "user 0.41" in line.text
    view.apply(UserSpeechEnded(3.0, duration=1.0))
    assert view.speaker == ""  # nobody is speaking


async def test_state_bar_shows_the_label():
    app = DuplexApp(EventFeed([], SessionInfo(title="test")), autostart=False)
    async with app.run_test(size=(130, 42)) as pilot:
        bus = EventBus()
        bus.subscribe(app.publish)
        assert "voice" not in app.statebar.render().plain  # gate off: no label
        bus.publish(SpeakerHeard(1.0, label="other_speaker", sim_user=0.4, sim_agent=0.2, confidence=0.8, window=0.4))
        app.flush_events()
        await pilot.pause()
        assert app.statebar.speaker == "other_speaker"
        assert "voice someone else" in app.statebar.render().plain
        bus.publish(SpeakerHeard(1.3, label="user", sim_user=0.9, sim_agent=0.2, confidence=0.8, window=0.7))
        app.flush_events()
        await pilot.pause()
        assert "voice user" in app.statebar.render().plain


def test_run_names_the_speaker_mode():
    enc = FakeEncoder({})
    assert "off" in mode_line(SpeakerConfig(enabled=False), None)
    on = SpeakerConfig()
    assert on.enabled and on.profile == "", "on by default, for the agent's own voice only"
    assert "not loaded" in mode_line(on, None)
    agent_only = mode_line(on, SpeakerGate(enc, None, profile("agent", AGENT), on))  # type: ignore[arg-type]
    assert "no enrolled user" in agent_only and "only the agent's own voice" in agent_only
    both = mode_line(on, SpeakerGate(enc, profile("alice", USER), profile("agent", AGENT), on))  # type: ignore[arg-type]
    assert "user 'alice' enrolled" in both
