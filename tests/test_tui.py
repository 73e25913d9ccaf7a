"""The terminal UI, driven by Pilot on a scripted event stream through the bus path.

A conversation with a barge-in is written out event by event (what the engine emits);
the tests publish it on an :class:`EventBus` whose subscriber is the app, step the
app's drain, and read what each pane shows. ``test_tui_engine.py`` does the same on the
real engine.
"""

from __future__ import annotations

import asyncio
import sys
import types

import pytest
from rich.text import Text
from textual.notifications import Notify

from duplex.bus import EventBus
from duplex.errors import AudioError, PolicyError
from duplex.events import (
    AgentState,
    AgentStopped,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    ASRPartial,
    AudioPlayed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    Levels,
    LLMToken,
    Notice,
    OverlapIgnored,
    PolicyFrame,
    SessionEnded,
    StageError,
    StateChanged,
    TextToTTS,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
    VoiceEnrolled,
)
from tui.app import DuplexApp
from tui.session import POLICIES
from tui.charts import THRESHOLD_CHAR, bars, bucket_max, spark
from tui.session import EventFeed, SessionInfo
from tui.view import SessionView, percentile
from tui.widgets import ConversationPane, HelpScreen, StateBar

SIZE = (130, 42)
REPLY = "The moon is about three hundred eighty four thousand kilometres away from the earth today."
HEARD = "The moon is about three hundred"


def user_turn(t: float, utt: int, words: list[str], agent_speaking: bool = False) -> list[Event]:
    """Speech start, one growing partial per word, the final."""
    ev: list[Event] = [UserSpeechStarted(t, agent_speaking=agent_speaking)]
    for i in range(1, len(words) + 1):
        ev.append(ASRPartial(t + 0.13 * i, text=" ".join(words[:i]), utterance=utt))
    end = t + 0.13 * len(words) + 0.2
    ev += [UserSpeechEnded(end, duration=end - t), ASRFinal(end, text=" ".join(words), utterance=utt, compute=0.05)]
    return ev


def played(t: float, turn: int, words: list[str]) -> list[Event]:
    """Audio chunks every 32 ms; every second chunk completes a word."""
    ev: list[Event] = []
    for i, w in enumerate(words):
        ev.append(AudioPlayed(t + 0.064 * i, turn=turn, sample=i, n_samples=512, text=""))
        ev.append(AudioPlayed(t + 0.064 * i + 0.032, turn=turn, sample=i, n_samples=512, text=w))
    return ev


def barge_in_session() -> list[Event]:
    """Ask, the agent answers, the user says 'okay' (a backchannel), then cuts in."""
    ev = user_turn(0.5, 1, "how far is the moon".split())
    ev += [
        EndOfTurn(1.8, turn=1, delay=0.64, text="how far is the moon"),
        AgentTurnStarted(1.8, turn=1, prompt="how far is the moon"),
        StateChanged(1.8, state=AgentState.THINKING),
        # The LLM has written the whole reply before a word is played: the pane must not show it.
        *[LLMToken(1.9, turn=1, text=w + " ") for w in REPLY.split()],
        TextToTTS(1.9, turn=1, index=0, text=REPLY),
        TurnLatency(2.0, turn=1, end_of_turn=0.64, asr_final=0.05, llm_first_token=0.3, tts_first_audio=0.2,
                    voice_to_voice=1.2),
        StateChanged(2.0, state=AgentState.SPEAKING),
        *played(2.0, 1, "The moon is".split()),
        *user_turn(2.2, 2, ["okay"], agent_speaking=True),
        Backchannel(2.6, who="user", text="okay", onset=2.2),
        *played(2.2, 1, "about three hundred".split()),
        UserSpeechStarted(2.6, agent_speaking=True),
        StateChanged(2.62, state=AgentState.OVERLAP),
        ASRPartial(2.7, text="wait", utterance=3),
        BargeIn(3.0, turn=1, onset=2.6, reaction=0.4, text="wait"),
        AgentStopped(3.03, turn=1, latency=0.43),
        AgentTurnEnded(3.03, turn=1, interrupted=True, generated=REPLY, heard=HEARD),
        StateChanged(3.03, state=AgentState.LISTENING),
        ASRPartial(3.1, text="wait stop", utterance=3),
        UserSpeechEnded(3.4, duration=0.8),
        ASRFinal(3.4, text="wait stop what about mars", utterance=3, compute=0.04),
    ]
    return ev


def of_line(app: DuplexApp, key_prefix: str) -> Text:
    lines = [w for w in app.conversation.lines if w.key.startswith(key_prefix)]
    assert len(lines) == 1, [w.key for w in app.conversation.lines]
    return lines[0].text


def styled(text: Text, word: str) -> str:
    """The style names covering the substring ``word`` of ``text``."""
    i = text.plain.index(word)
    return " ".join(str(s.style) for s in text.spans if s.start <= i < s.end)


class Stepper:
    """Publishes events on a real EventBus whose subscriber is the app, and drains."""

    def __init__(self, app: DuplexApp, pilot) -> None:
        self.app, self.pilot = app, pilot
        self.bus = EventBus()
        self.bus.subscribe(app.publish)

    async def send(self, *events: Event) -> None:
        for ev in events:
            self.bus.publish(ev)
        self.app.flush_events()
        await self.pilot.pause()


class Collect:
    """A ``message_hook`` keeping messages of some types, once each (bubbling re-posts them)."""

    def __init__(self, *kinds: type) -> None:
        self.kinds = kinds
        self.seen: list = []

    def __call__(self, msg) -> None:
        if isinstance(msg, self.kinds) and not any(m is msg for m in self.seen):
            self.seen.append(msg)

    def of(self, kind: type) -> list:
        return [m for m in self.seen if isinstance(m, kind)]


def feed(events: list[Event] | None = None, **info) -> EventFeed:
    return EventFeed(events or [], SessionInfo(title="test", **info))


# --- pilot: the panes -------------------------------------------------------------------------


async def test_panes_follow_a_conversation_with_a_barge_in() -> None:
    hook = Collect(ConversationPane.LineShown, StateBar.StateShown)
    app = DuplexApp(feed(recording=True), autostart=False)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        s = Stepper(app, pilot)
        ev = barge_in_session()

        # The user's partial grows live (italic, with a cursor), then settles into the final.
        await s.send(*ev[:3])  # speech start, "how", "how far"
        partial = of_line(app, "u1")
        assert partial.plain == "you   how far▌"
        assert "italic" in styled(partial, "far")
        rest_of_turn = ev.index(next(e for e in ev if isinstance(e, EndOfTurn)))
        await s.send(*ev[3:rest_of_turn])
        final = of_line(app, "u1")
        assert final.plain == "you   how far is the moon"
        assert "italic" not in styled(final, "moon")
        u1 = [m for m in hook.of(ConversationPane.LineShown) if m.key.startswith("u1")]
        assert [m.final for m in u1][0] is False and u1[-1].final is True
        assert [m.heard for m in u1] == ["how far", "how far is the moon"]  # one redraw per batch

        # The LLM wrote the whole reply, nothing is played yet: the agent is thinking.
        latency = next(i for i, e in enumerate(ev) if isinstance(e, TurnLatency))
        await s.send(*ev[rest_of_turn:latency])
        assert of_line(app, "a1").plain == "agent thinking…"
        assert app.statebar.label == "THINKING"
        first_audio = next(i for i, e in enumerate(ev) if isinstance(e, AudioPlayed))
        await s.send(*ev[latency:first_audio])
        assert of_line(app, "a1").plain == "agent thinking…"

        # Words appear as the speaker plays them; the user's "okay" is an inline backchannel.
        barge = next(i for i, e in enumerate(ev) if isinstance(e, BargeIn))
        await s.send(*ev[first_audio:barge])
        agent = of_line(app, "a1")
        assert agent.plain.startswith("agent The moon is ‹you: okay› about three hundred")
        assert "kilometres" not in agent.plain
        assert not [w for w in app.conversation.lines if w.key.startswith("u2")], "backchannel kept its own line"
        assert of_line(app, "u3").plain.startswith("you   wait▌")

        # The barge-in: the heard part stays, the never-heard rest is struck through.
        await s.send(*ev[barge:])
        agent = of_line(app, "a1")
        unheard = REPLY.split(maxsplit=len(HEARD.split()))[-1]
        assert agent.plain == f"agent The moon is ‹you: okay› about three hundred {unheard}  ✂"
        assert "strike" in styled(agent, "kilometres") and "strike" in styled(agent, "today.")
        assert "strike" not in styled(agent, "hundred")
        assert of_line(app, "u3").plain == "you   wait stop what about mars  ⚡ barge-in"

        # Timing: the turn's breakdown with its barge-in reaction, then p50/p95.
        assert app.timing.rows[0] == ("1", "640", "50", "300", "200", "1200", "400")
        assert [r[0] for r in app.timing.rows] == ["1", "p50", "p95"]

        # State bar: the initial state, then every change in order.
        labels = [m.label for m in hook.of(StateBar.StateShown)]
        assert labels == ["LISTENING", "THINKING", "SPEAKING", "BOTH", "LISTENING"]
        assert app.statebar.label == "LISTENING"

        # Event log: decisions are there and the filter keeps only matching lines.
        kinds = [line.kind for line in app.eventlog.shown]
        assert {"end of turn", "backchannel", "BARGE-IN", "reply end"} <= set(kinds)
        await pilot.press("slash", *"barge")
        assert app.eventlog.filter == "barge"
        assert app.eventlog.shown and all("barge" in x.plain.lower() for x in app.eventlog.shown)
        await pilot.press("escape")


async def test_many_partials_in_one_frame_cost_one_redraw() -> None:
    hook = Collect(ConversationPane.LineShown)
    app = DuplexApp(feed(), autostart=False)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        s = Stepper(app, pilot)
        words = [f"w{i}" for i in range(300)]
        await s.send(UserSpeechStarted(0.0), *[ASRPartial(0.01 * i, text=" ".join(words[:i]), utterance=1)
                                               for i in range(1, 301)])
        shown = hook.of(ConversationPane.LineShown)
        assert len(shown) == 1 and shown[0].heard == " ".join(words)
        assert app.stats.batches == 1 and app.stats.max_batch == 301


async def test_agent_backchannel_and_ignored_overlap_show_inline() -> None:
    app = DuplexApp(feed(), autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        s = Stepper(app, pilot)
        await s.send(UserSpeechStarted(0.0), ASRPartial(0.3, text="so I was thinking", utterance=1),
                     Backchannel(0.9, who="agent", text="mm-hmm", onset=0.9),
                     AudioPlayed(0.95, turn=-1, n_samples=512, text="mm-hmm"),
                     ASRPartial(1.4, text="so I was thinking about a trip", utterance=1))
        assert of_line(app, "u1").plain == "you   so I was thinking ‹agent: mm-hmm› about a trip▌"
        await s.send(ASRFinal(1.8, text="so I was thinking about a trip", utterance=1),
                     AgentTurnStarted(2.0, turn=1), *played(2.1, 1, ["Where", "to?"]),
                     UserSpeechStarted(2.2, agent_speaking=True), ASRPartial(2.3, text="hm", utterance=2),
                     OverlapIgnored(2.5, onset=2.2, duration=0.3, text="hm"),
                     ASRFinal(2.5, text="hm", utterance=2),
                     AgentTurnEnded(2.6, turn=1, generated="Where to?", heard="Where to?"))
        assert of_line(app, "u2").plain == "you   hm  (ignored)"
        assert of_line(app, "a1").plain == "agent Where to?"


async def test_signals_mark_thresholds_and_follow_the_policy() -> None:
    f = feed()
    app = DuplexApp(f, autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        s = Stepper(app, pilot)
        frames: list[Event] = []
        for i in range(100):
            t = i * 0.032
            p = 0.9 if 60 <= i < 70 else 0.1
            frames.append(Levels(t, mic_db=-30.0, out_db=-20.0, vad=p))
            frames.append(PolicyFrame(t, policy="predictor", probs=(("barge_in", p), ("continue", 1 - p),
                                                                    ("end_of_turn", 0.2), ("hold", 0.8),
                                                                    ("thr_barge_in", 0.7), ("thr_end_of_turn", 0.6))))
        await s.send(*frames)
        assert app.signals.rows_drawn[:3] == ["mic", "speaker", "vad"]
        assert "barge_in" in app.signals.rows_drawn and "continue" not in app.signals.rows_drawn
        assert app.signals.thresholds == {"barge_in": 0.7, "end_of_turn": 0.6}, "read from the events alone"
        assert not any(r.startswith("thr_") for r in app.signals.rows_drawn)
        runs = [run for row in app.signals.rows(60) for run in row]
        plain = "".join(chars for chars, _ in runs)
        assert "thr 0.70" in plain and THRESHOLD_CHAR in plain
        assert any("red" in style for _, style in runs), "no column above its threshold"
        screen = app.export_screenshot()
        assert "thr&#160;0.70" in screen or "thr 0.70" in screen


async def test_keys_reach_the_session() -> None:
    f = feed(recording=True)
    app = DuplexApp(f, autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await pilot.press("m")
        await pilot.press("r")
        assert app.statebar.recording is False
        await pilot.press("r")
        assert app.statebar.recording is True
        await pilot.press("p")
        await pilot.pause(0.1)
        nxt = POLICIES[(POLICIES.index("rules") + 1) % len(POLICIES)]
        assert ("policy", nxt) in f.calls and app.statebar.policy == nxt, "the next policy of the one registry"
        assert f.calls[:4] == [("muted", True), ("muted", False), ("recording", False), ("recording", True)]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        s = Stepper(app, pilot)
        await s.send(*barge_in_session())
        assert app.conversation.lines and app.timing.rows
        await pilot.press("c")
        assert app.conversation.lines == [] and app.timing.rows == [] and app.eventlog.shown == []
        await pilot.press("q")
    assert ("end", "quit by the user") not in f.calls  # nothing was running: q quits at once
    assert app.return_code == 0


async def test_stage_errors_notify_and_the_app_keeps_running() -> None:
    hook = Collect(Notify)

    class Failing(EventFeed):
        async def run(self, publish) -> None:
            publish(StateChanged(0.1, state=AgentState.THINKING))
            publish(StageError(0.2, stage="llm", message="endpoint unreachable: connection refused"))
            await asyncio.sleep(0)
            raise AudioError("cannot open the microphone: device busy")

    app = DuplexApp(Failing([], SessionInfo()), refresh_hz=50)
    async with app.run_test(size=SIZE, notifications=True, message_hook=hook) as pilot:
        for _ in range(50):
            if app.finished:
                break
            await pilot.pause(0.02)
        await pilot.pause()
        assert app.finished and app.finish_error == "cannot open the microphone: device busy"
        texts = [n.notification.message for n in hook.seen if n.notification.severity == "error"]
        assert "llm: endpoint unreachable: connection refused" in texts
        assert "session: cannot open the microphone: device busy" in texts
        assert app.statebar.label == "ENDED"
        assert app.is_running
        await pilot.press("m")  # still responsive
        assert ("muted", True) in app.session.calls  # type: ignore[attr-defined]


async def test_a_policy_that_cannot_load_is_a_notification() -> None:
    hook = Collect(Notify)

    class NoPredictor(EventFeed):
        async def set_policy(self, name: str) -> None:
            raise PolicyError("predictor weights not found")

    app = DuplexApp(NoPredictor([], SessionInfo(policy="rules")), autostart=False)
    async with app.run_test(size=SIZE, notifications=True, message_hook=hook) as pilot:
        await pilot.press("p")
        await pilot.pause(0.1)
        assert any("predictor weights not found" in n.notification.message for n in hook.seen)
        assert app.statebar.policy == "rules"


async def test_e_enrols_the_voice_and_says_how_it_went() -> None:
    hook = Collect(Notify)

    class Enrolling(EventFeed):
        async def enroll(self, seconds: float = 10.0) -> str:
            self.calls.append(("enroll", seconds))
            return "enrolled 'user' from 9.1 s of speech: only this voice takes the turn now"

    ok = Enrolling([], SessionInfo())
    app = DuplexApp(ok, autostart=False)
    async with app.run_test(size=SIZE, notifications=True, message_hook=hook) as pilot:
        await pilot.press("e")
        await pilot.pause(0.1)
        assert ("enroll", 10.0) in ok.calls
        assert any("talk alone for 10 s" in n.notification.message for n in hook.seen)
        assert any("only this voice takes the turn now" in n.notification.message for n in hook.seen)
    hook.seen.clear()
    app = DuplexApp(EventFeed([], SessionInfo()), autostart=False)
    async with app.run_test(size=SIZE, notifications=True, message_hook=hook) as pilot:
        await pilot.press("e")
        await pilot.pause(0.1)
        errors = [n.notification.message for n in hook.seen if n.notification.severity == "error"]
        assert errors and errors[0].startswith("voice not enrolled: a recorded event log has no microphone")
        assert app.is_running


def test_an_enrolled_voice_is_in_the_event_log() -> None:
    view = SessionView()
    view.apply(VoiceEnrolled(3.2, name="alice", speech_s=9.6, profile="{}"))
    assert any(line.kind == "voice" and "enrolled 'alice' (9.6 s" in line.text for line in view.log)


async def test_quit_ends_a_running_session_first() -> None:
    gate = asyncio.Event()

    async def wait(ev: Event) -> None:
        await gate.wait()

    f = EventFeed([Notice(0.0, message="x")], SessionInfo(), gate=wait)
    app = DuplexApp(f)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("q")
        assert ("end", "quit by the user") in f.calls
        gate.set()
        await pilot.pause(0.2)
    assert app.return_code == 0


async def test_a_paced_feed_runs_to_the_end_on_its_own() -> None:
    f = feed(barge_in_session())
    f.pace = lambda dt: asyncio.sleep(dt / 50)  # 50x real time
    app = DuplexApp(f)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            if app.finished:
                break
            await pilot.pause(0.02)
        assert app.finished
        assert of_line(app, "a1").plain.endswith("✂")
        assert app.stats.events == len(f.events)


# --- the view model and the charts (no app) ---------------------------------------------------


def test_view_folds_a_late_final_into_the_backchannel_mark() -> None:
    v = SessionView()
    v.apply_all([AgentTurnStarted(0.0, turn=1), *played(0.1, 1, ["one", "two"]),
                 UserSpeechStarted(0.2, agent_speaking=True), ASRPartial(0.3, text="uh", utterance=5),
                 Backchannel(0.5, who="user", text="uh", onset=0.2), ASRFinal(0.6, text="uh-huh", utterance=5)])
    lines = list(v.transcript.lines.values())
    assert [ln.key for ln in lines] == ["a1"]
    assert [(m.at, m.who, m.text) for m in lines[0].marks] == [(2, "user", "uh-huh")]


def test_view_drops_an_utterance_with_no_words() -> None:
    v = SessionView()
    v.apply_all([UserSpeechStarted(0.0), ASRFinal(0.5, text="", utterance=1), SessionEnded(1.0)])
    assert v.transcript.lines == {} and v.ended == "input ended"


def test_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)


def test_spark_draws_the_threshold_through_empty_cells() -> None:
    chart = spark([0.0, 1.0, None, 0.2], lo=0.0, hi=1.0, height=2, threshold=0.5)
    top, bottom = chart.plain.split("\n")
    assert top == f"{THRESHOLD_CHAR}█{THRESHOLD_CHAR}{THRESHOLD_CHAR}"  # 0.5 of 2 rows: the top row's floor
    assert bottom[1] == "█" and bottom[3] != " "


def test_bucket_max_keeps_peaks() -> None:
    pts = [(i * 0.1, float(i == 7)) for i in range(10)]
    cols = bucket_max(pts, end=0.9, seconds=1.0, width=5)
    assert cols.count(1.0) == 1 and cols[0] == 0.0


def test_bars_one_per_turn() -> None:
    assert bars([1.0, 2.0], height=1, width=20).plain == "▄▄ ██"


# --- the command line -----------------------------------------------------------------------------


def test_talk_without_a_sound_card_says_so_in_one_line(monkeypatch, capsys) -> None:
    from duplex.cli import main

    monkeypatch.setitem(sys.modules, "pyaudio", None)  # import pyaudio -> ImportError
    assert main(["talk", "--no-record"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["duplex: no sound card / PyAudio not available: try duplex talk --simulate examples/demo.toml"]


def test_talk_with_pyaudio_but_no_device(monkeypatch, capsys) -> None:
    from tui.cli import live_audio_available

    class PA:
        def get_default_input_device_info(self):
            raise OSError("No Default Input Device Available")

        def terminate(self) -> None:
            pass

    assert live_audio_available(types.SimpleNamespace(PyAudio=PA)) is False


def test_live_audio_needs_an_input_and_an_output_device() -> None:
    from tui.cli import live_audio_available

    class PA:
        def get_default_input_device_info(self):
            return {"index": 0}

        def get_default_output_device_info(self):
            return {"index": 1}

        def terminate(self) -> None:
            pass

    assert live_audio_available(types.SimpleNamespace(PyAudio=PA)) is True


def test_paused_recording_writes_silence_and_keeps_only_notices(tmp_path) -> None:
    import json

    import numpy as np
    import soundfile as sf

    from duplex.audio import FRAME_SAMPLES
    from duplex.config import load_config
    from duplex.session.recorder import Recorder
    from tui.session import RecordingGate

    gate = RecordingGate(Recorder(tmp_path, load_config()))
    loud = np.full(FRAME_SAMPLES, 0.5, dtype=np.float32)
    gate.on_audio(0.0, loud, loud)
    gate.on_event(ASRPartial(0.0, text="kept", utterance=1))
    gate.paused = True
    gate.on_audio(0.032, loud, loud)
    gate.on_event(ASRPartial(0.032, text="private", utterance=1))
    gate.on_event(Notice(0.032, message="recording paused"))
    gate.paused = False
    gate.on_audio(0.064, loud, loud)
    gate.recorder.close()
    mic, _ = sf.read(tmp_path / "mic.wav", dtype="float32")
    assert len(mic) == 3 * FRAME_SAMPLES  # still aligned with the session clock
    assert np.abs(mic[FRAME_SAMPLES:2 * FRAME_SAMPLES]).max() == 0.0
    assert np.abs(mic[2 * FRAME_SAMPLES:]).min() > 0.4
    lines = [json.loads(s) for s in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e.get("text", e.get("message")) for e in lines] == ["kept", "recording paused"]
