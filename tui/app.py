"""The duplex terminal UI: watch a conversation, and see why the agent stopped or kept talking.

Threading model: there is one event loop, Textual's. The conversation (the engine and
its stages' executors) runs on it as a worker, so the engine publishes events on the
same thread the widgets live on. The bus subscriber (:meth:`DuplexApp.publish`) only
appends to an inbox; a timer drains the inbox ``refresh_hz`` times a second into the
:class:`~tui.view.SessionView` and copies what changed into the widgets, once per
frame. The engine never waits for the UI, and a burst of partials costs one redraw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer

from duplex.errors import DuplexError
from duplex.events import ControlEvent, Event, SessionEnded, StageError
from tui.session import ENROL_S, POLICIES, Session
from tui.view import SessionView
from tui.widgets import ConversationPane, EventLog, HelpScreen, SignalsPane, StateBar, TimingPane

log = logging.getLogger(__name__)

REFRESH_HZ = 25.0
"""Inbox drains per second: ~one per display frame, far below the event rate."""
MAX_INBOX = 20_000
"""Events waiting for the next drain; past this, data events are dropped and counted."""
QUIT_GRACE_S = 5.0
"""After ``q``, how long the conversation gets to end cleanly (close the recording)."""


@dataclass
class UIStats:
    """How the UI keeps up (the benchmark reads these; the state bar shows drops)."""

    batches: int = 0
    events: int = 0
    dropped: int = 0
    max_batch: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    """Per drain: seconds from the oldest waiting event's arrival to the drain."""
    costs: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    """Per drain: seconds spent applying the batch and updating the widgets."""


class DuplexApp(App[int]):
    """The terminal UI around one :class:`~tui.session.Session`.

    Args:
        session: what to run and steer (a live conversation, a replay, a prepared feed).
        clock: wall-clock seconds for the UI's own lag figures (tests inject a fake one);
            the panes themselves run on the session clock carried by the events.
        refresh_hz: how often the inbox is drained into the widgets.
        autostart: start the session on mount (tests may start it by hand).
    """

    CSS_PATH = Path(__file__).with_name("duplex.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "duplex"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("m", "mute", "Mute mic"),
        Binding("r", "record", "Recording"),
        Binding("p", "policy", "Policy"),
        Binding("e", "enroll", "Enrol voice"),
        Binding("c", "clear", "Clear"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "unfocus", "Back", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]
    HELP_KEYS = [
        ("m", "mute / unmute the microphone (the agent hears silence)"),
        ("r", "pause / resume recording (paused spans are written as silence, their events dropped)"),
        ("p", "switch the turn policy: rules → predictor → smart-turn"),
        ("e", "enrol your voice: talk alone for 10 s, then only your voice can interrupt or end a turn"),
        ("c", "clear the conversation, timing and event panes"),
        ("/", "filter the event log (escape returns)"),
        ("?", "this help"),
        ("q", "quit (ends the conversation and closes the recording)"),
    ]

    @dataclass
    class SessionFinished(Message):
        """The conversation's task returned; ``error`` says why if it failed."""

        error: str | None = None

    def __init__(self, session: Session, *, clock: Callable[[], float] = time.monotonic,
                 refresh_hz: float = REFRESH_HZ, autostart: bool = True) -> None:
        super().__init__()
        self.session = session
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.autostart = autostart
        self.title = session.info.title
        self.view = SessionView()
        self.stats = UIStats()
        self.started = False
        self.finished = False
        self.finish_error: str | None = None
        self._inbox: list[Event] = []
        self._oldest = 0.0
        self._muted = False
        self._quitting = False
        self._policy = session.info.policy
        info = session.info
        self.statebar = StateBar(info)
        self.conversation = ConversationPane()
        self.signals = SignalsPane(self.view)
        self.signals.vad_threshold = info.vad_threshold
        self.timing = TimingPane()
        self.eventlog = EventLog()

    def compose(self) -> ComposeResult:
        yield self.statebar
        with Horizontal(id="main"):
            yield self.conversation
            with Vertical(id="side"):
                yield self.signals
                yield self.timing
        yield self.eventlog
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(1 / self.refresh_hz, self.flush_events, name="drain")
        if self.session.info.mqtt:
            self.set_interval(0.5, self._poll_mqtt, name="mqtt")
        if self.autostart:
            self.start_session()

    def start_session(self) -> None:
        self.started = True
        self.run_worker(self._run_session(), name="session", group="session", exit_on_error=False)

    async def _run_session(self) -> None:
        error: str | None = None
        try:
            await self.session.run(self.publish)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the UI outlives a failed conversation: show it, keep running
            error = str(exc) if isinstance(exc, DuplexError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, DuplexError):
                log.exception("the conversation failed")
            self.publish(StageError(self.view.now, stage="session", message=error))
            self.publish(SessionEnded(self.view.now, reason=f"failed: {error}"))
        self.post_message(self.SessionFinished(error))

    # --- events in: the bus side (never touches a widget) -------------------------------------

    def publish(self, ev: Event) -> None:
        """The bus subscriber: O(1), no rendering. Data events are dropped past ``MAX_INBOX``."""
        inbox = self._inbox
        if not inbox:
            self._oldest = self.clock()
        elif len(inbox) >= MAX_INBOX and not isinstance(ev, ControlEvent):
            self.stats.dropped += 1
            return
        inbox.append(ev)

    @property
    def pending(self) -> list[Event]:
        """Events published since the last drain."""
        return list(self._inbox)

    # --- events out: the drain (one widget update per frame) ------------------------------------

    def flush_events(self) -> int:
        """Apply everything waiting to the view and redraw what changed; returns the count."""
        batch = self._inbox
        if not batch:
            return 0
        self._inbox = []
        t0 = self.clock()
        view = self.view
        view.apply_all(batch)
        dirty = view.take_dirty()
        if "conversation" in dirty:
            self.conversation.sync(*view.transcript.take_changes())
        if "state" in dirty:
            self.statebar.state = view.state
            self.statebar.muted = view.muted
            self.statebar.speaker = view.speaker
            self.statebar.ended = view.ended
        if "signals" in dirty:
            if view.thresholds != self.signals.thresholds:
                self.signals.thresholds = dict(view.thresholds)
            self.signals.sync()
        if "timing" in dirty:
            self.timing.sync(view.timing)
        if "log" in dirty:
            self.eventlog.append(view.new_log)
            view.new_log = []
        for line in view.errors:
            if line.severity == "error":
                self.notify(line.text, title="error", severity="error", timeout=8)
            else:
                self.notify(line.text, severity="information", timeout=4)
        view.errors.clear()
        if self.stats.dropped != self.statebar.ui_dropped:
            self.statebar.ui_dropped = self.stats.dropped
        st = self.stats
        st.batches += 1
        st.events += len(batch)
        st.max_batch = max(st.max_batch, len(batch))
        now = self.clock()
        st.lags.append(now - self._oldest)
        st.costs.append(now - t0)
        return len(batch)

    def on_duplex_app_session_finished(self, msg: SessionFinished) -> None:
        self.flush_events()
        self.finished = True
        self.finish_error = msg.error
        if self._quitting:
            self.exit(0)
            return
        if msg.error is None:
            where = f"; recorded in {self.session.info.session_dir}" if self.session.info.session_dir else ""
            self.notify(f"conversation ended{where}. q quits.", title="done", timeout=10)

    def _poll_mqtt(self) -> None:
        c = self.session.mqtt_connected()
        self.statebar.mqtt = "unknown" if c is None else ("connected" if c else "down")

    # --- keys -------------------------------------------------------------------------------------

    def action_mute(self) -> None:
        self._muted = not self._muted
        self.session.set_muted(self._muted)

    def action_record(self) -> None:
        if self.session.info.recording is None:
            self.notify("this session is not recorded (--no-record)", severity="warning")
            return
        want = not bool(self.statebar.recording)
        self.statebar.recording = self.session.set_recording(want)

    def action_policy(self) -> None:
        name = POLICIES[(POLICIES.index(self._policy) + 1) % len(POLICIES)] if self._policy in POLICIES else POLICIES[0]
        self.notify(f"switching the policy to {name}…", timeout=3)
        self.run_worker(self._switch_policy(name), group="policy", exclusive=True, exit_on_error=False)

    def action_enroll(self) -> None:
        self.notify(f"enrolling your voice: talk alone for {ENROL_S:.0f} s…", title="voice", timeout=ENROL_S)
        self.run_worker(self._enroll(), group="enroll", exclusive=True, exit_on_error=False)

    async def _enroll(self) -> None:
        try:
            line = await self.session.enroll(ENROL_S)
        except Exception as exc:  # a failed enrolment is a notification, not a crash
            msg = str(exc) if isinstance(exc, DuplexError) else f"{type(exc).__name__}: {exc}"
            self.notify(f"voice not enrolled: {msg}", title="voice", severity="error", timeout=10)
            return
        self.notify(line, title="voice", timeout=8)

    async def _switch_policy(self, name: str) -> None:
        try:
            await self.session.set_policy(name)
        except Exception as exc:  # a policy that cannot load is a notification, not a crash
            msg = str(exc) if isinstance(exc, DuplexError) else f"{type(exc).__name__}: {exc}"
            self.notify(f"cannot switch to {name}: {msg}", title="policy", severity="error", timeout=8)
            return
        self._policy = name
        self.statebar.policy = name

    def action_clear(self) -> None:
        self.flush_events()
        self.view.clear()
        self.conversation.sync(*self.view.transcript.take_changes())
        self.timing.sync(self.view.timing)
        self.eventlog.clear()
        self.view.take_dirty()

    def action_filter(self) -> None:
        self.eventlog.input.focus()

    def action_unfocus(self) -> None:
        self.set_focus(None)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.HELP_KEYS))

    async def action_quit(self) -> None:
        if not self.started or self.finished or self._quitting:
            self.exit(0)
            return
        self._quitting = True
        self.session.end("quit by the user")
        self.set_timer(QUIT_GRACE_S, lambda: self.exit(0))

    def save_view(self, path: str | Path) -> str:
        """Save an SVG screenshot of the app as it is now (made by Textual itself)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        return self.save_screenshot(p.name, str(p.parent))
