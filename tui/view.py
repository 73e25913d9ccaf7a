"""What the panes show, as plain data: the UI's model of a session, built from events.

:class:`SessionView` folds the engine's events into a transcript, a state, signal
windows, a timing book and a decision log. It knows nothing about Textual: the app
applies a whole batch of events here, then copies what changed (``dirty``) into the
widgets once. That is the batching — many partials per second cost one widget update
per frame — and it keeps every rule about *what* is shown testable without a terminal.

Transcript rules (the issue's wording in brackets):

* a user line grows with each :class:`ASRPartial` and settles on :class:`ASRFinal`
  [partials appear live, settle into final text];
* an agent line grows only with :class:`AudioPlayed` words [follow the play cursor,
  not the LLM]; :class:`AgentTurnEnded` makes ``heard`` authoritative and keeps the
  never-heard rest of ``generated`` as ``unheard`` [struck through after a barge-in];
* user speech that starts while the agent talks is a line of its own until the policy
  decides: a barge-in keeps it, a backchannel folds it into the agent's line as an
  inline mark at the word where it started, ignored noise stays dimmed;
  the agent's own "mm-hmm" is an inline mark in the user's line [backchannels inline];
* a policy's pause is a line of its own under the agent's: "paused" while the reply is
  held, then "resumed after N ms" or "committed: barge-in after N ms" [pause / resume /
  commit shown].
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from duplex.events import (
    AgentPaused,
    AgentResumed,
    AgentState,
    AgentStopped,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    ASRPartial,
    AudioPlayed,
    Backchannel,
    BackchannelCancelled,
    BargeIn,
    EndOfTurn,
    Event,
    Levels,
    Muted,
    Notice,
    OtherSpeaker,
    OverlapIgnored,
    PolicyFrame,
    SessionEnded,
    SpeakerHeard,
    StageError,
    StateChanged,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
    VoiceEnrolled,
)

SIGNAL_WINDOW_S = 6.0
"""The signal sparklines show this many seconds of session time."""
MAX_LINES = 400
"""Transcript lines kept (older ones scroll away for good)."""
MAX_LOG = 2000

Who = Literal["user", "agent"]
Status = Literal["live", "final", "overlap", "barge_in", "ignored", "backchannel", "thinking", "done", "cut",
                 "paused", "resumed", "committed"]
PAUSE_STATUSES = ("paused", "resumed", "committed")
"""Statuses of the pause line (``who`` is ``agent``; it is not the agent's turn line)."""


@dataclass
class Mark:
    """An inline backchannel inside the other speaker's line, before word ``at``."""

    at: int
    who: Who
    text: str


@dataclass
class Line:
    """One line of the conversation pane (a user utterance or an agent turn)."""

    key: str
    who: Who
    status: Status
    text: str = ""
    """User: the latest hypothesis. Agent: the words heard so far."""
    unheard: str = ""
    """Agent, after a barge-in: what was generated but never played."""
    marks: list[Mark] = field(default_factory=list)
    anchor: tuple[str, int] | None = None
    """User overlap: the agent line and word it came in at (where a backchannel mark goes)."""
    t: float = 0.0
    version: int = 0

    @property
    def final(self) -> bool:
        return self.status not in ("live", "overlap", "thinking")

    def touch(self) -> None:
        self.version += 1


@dataclass(frozen=True, slots=True)
class LogLine:
    t: float
    kind: str
    text: str
    severity: Literal["info", "decision", "warning", "error"] = "info"

    @property
    def plain(self) -> str:
        return f"{self.t:8.2f}  {self.kind:<15} {self.text}"


class Transcript:
    """The conversation pane's lines, with the keys changed or removed since the last sync."""

    def __init__(self) -> None:
        self.lines: dict[str, Line] = {}  # insertion order = display order
        self.changed: set[str] = set()
        self.removed: set[str] = set()
        self._utt_line: dict[int, str] = {}  # utterance -> user line key
        self._utt_mark: dict[int, tuple[str, int]] = {}  # utterance folded into (agent key, mark index)
        self._next_overlap = False
        self._seq = 0
        self._pause: tuple[str, float] | None = None  # (pause line key, paused at)

    # --- bookkeeping ---------------------------------------------------------------------

    def _put(self, line: Line) -> Line:
        self.lines[line.key] = line
        self.changed.add(line.key)
        self.removed.discard(line.key)
        while len(self.lines) > MAX_LINES:
            old = next(iter(self.lines))
            self._drop(old)
        return line

    def _drop(self, key: str) -> None:
        self.lines.pop(key, None)
        self.changed.discard(key)
        self.removed.add(key)

    def _changed(self, line: Line) -> None:
        line.touch()
        if line.key in self.lines:
            self.changed.add(line.key)

    def clear(self) -> None:
        for key in list(self.lines):
            self._drop(key)
        self._utt_line.clear()
        self._utt_mark.clear()

    def take_changes(self) -> tuple[list[Line], set[str]]:
        """Lines to (re)draw, in display order, and keys to remove; resets both."""
        changed = [self.lines[k] for k in self.lines if k in self.changed]
        removed = self.removed
        self.changed, self.removed = set(), set()
        return changed, removed

    def agent_line(self, turn: int, t: float, create: bool = True) -> Line | None:
        key = f"a{turn}"
        line = self.lines.get(key)
        if line is None and create:
            line = self._put(Line(key, "agent", "thinking", t=t))
        return line

    def _current_agent(self) -> Line | None:
        for line in reversed(self.lines.values()):
            if line.who == "agent" and line.status not in PAUSE_STATUSES:
                return line
        return None

    def _pending_overlap(self) -> Line | None:
        for line in reversed(self.lines.values()):
            if line.who == "user" and line.status == "overlap":
                return line
        return None

    def _open_user(self) -> Line | None:
        for line in reversed(self.lines.values()):
            if line.who == "agent":
                return None
            if line.who == "user" and line.status in ("live", "final", "barge_in"):
                return line
        return None

    # --- the user's side -------------------------------------------------------------------

    def speech_started(self, agent_speaking: bool) -> None:
        self._next_overlap = agent_speaking

    def user_text(self, utterance: int, text: str, t: float, final: bool) -> None:
        folded = self._utt_mark.get(utterance)
        if folded is not None:  # already decided to be a backchannel: update the mark
            key, i = folded
            agent = self.lines.get(key)
            if agent is not None and text:
                agent.marks[i].text = text
                self._changed(agent)
            return
        key = self._utt_line.get(utterance)
        line = self.lines.get(key) if key else None
        if line is None:
            if not text:
                return  # nothing recognised, nothing to show
            self._seq += 1
            key = f"u{utterance}.{self._seq}"
            self._utt_line[utterance] = key
            status: Status = "overlap" if self._next_overlap else "live"
            self._next_overlap = False
            agent = self._current_agent() if status == "overlap" else None
            line = self._put(Line(key, "user", status, text=text, t=t))
            if agent is not None:
                line.anchor = (agent.key, len(agent.text.split()))
        if text:
            line.text = text
        if final:
            if not line.text:
                self._drop(line.key)
                return
            if line.status == "live":
                line.status = "final"
        self._changed(line)

    def user_backchannel(self, text: str) -> None:
        """The policy let the user's overlap pass as a backchannel: fold it into the agent's line."""
        line = self._pending_overlap()
        if line is None:
            return
        agent = self.lines.get(line.anchor[0]) if line.anchor else None
        if agent is None or line.anchor is None:
            line.status = "backchannel"
            self._changed(line)
            return
        agent.marks.append(Mark(line.anchor[1], "user", line.text or text))
        utt = next((u for u, k in self._utt_line.items() if k == line.key), None)
        if utt is not None:
            self._utt_mark[utt] = (agent.key, len(agent.marks) - 1)
            del self._utt_line[utt]
        self._drop(line.key)
        self._changed(agent)

    def barge_in(self) -> None:
        line = self._pending_overlap()
        if line is not None:
            line.status = "barge_in"
            self._changed(line)

    def overlap_ignored(self) -> None:
        line = self._pending_overlap()
        if line is not None:
            line.status = "ignored"
            self._changed(line)

    # --- pause, then decide --------------------------------------------------------------

    def paused(self, t: float) -> None:
        self._seq += 1
        line = self._put(Line(f"p{self._seq}", "agent", "paused", text="paused", t=t))
        self._pause = (line.key, t)

    def pause_resolved(self, t: float, committed: bool, timeout: bool = False) -> None:
        if self._pause is None:
            return
        key, t0 = self._pause
        self._pause = None
        line = self.lines.get(key)
        if line is None:
            return
        ms = f"{(t - t0) * 1000:.0f} ms"
        if committed:
            line.status, line.text = "committed", f"committed: barge-in after {ms}"
        else:
            line.status, line.text = "resumed", f"resumed after {ms}" + (" (timeout)" if timeout else "")
        self._changed(line)

    # --- the agent's side ------------------------------------------------------------------

    def agent_started(self, turn: int, t: float) -> None:
        self.agent_line(turn, t)

    def agent_played(self, turn: int, words: str, t: float) -> None:
        line = self.agent_line(turn, t)
        assert line is not None
        line.text = f"{line.text} {words}".strip()
        if line.status == "thinking":
            line.status = "live"
        self._changed(line)

    def agent_ended(self, turn: int, heard: str, generated: str, interrupted: bool, t: float) -> None:
        line = self.agent_line(turn, t, create=bool(heard or generated))
        if line is None:
            return
        line.text = heard
        if interrupted:
            line.unheard = " ".join(generated.split()[len(heard.split()):])
            line.status = "cut"
        else:
            line.status = "done"
        if not line.text and not line.unheard:
            self._drop(line.key)
            return
        self._changed(line)

    def agent_backchannel(self, text: str, t: float) -> None:
        user = self._open_user()
        if user is not None:
            user.marks.append(Mark(len(user.text.split()), "agent", text))
            self._changed(user)
            return
        self._seq += 1
        self._put(Line(f"b{self._seq}", "agent", "backchannel", text=text, t=t))


class Series:
    """One signal's recent values, ``(t, value)`` on the session clock."""

    def __init__(self, maxlen: int = 512) -> None:
        self.points: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, t: float, v: float) -> None:
        self.points.append((t, v))

    def window(self, end: float, seconds: float = SIGNAL_WINDOW_S) -> list[tuple[float, float]]:
        lo = end - seconds
        return [p for p in self.points if p[0] > lo]

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); ``None`` for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


TIMING_COLUMNS = ("end_of_turn", "asr_final", "llm_first_token", "tts_first_audio", "voice_to_voice", "reaction")
"""Per-turn figures (seconds): the latency breakdown, then the barge-in reaction time."""


@dataclass
class TurnTiming:
    turn: int
    end_of_turn: float | None = None
    asr_final: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    voice_to_voice: float | None = None
    reaction: float | None = None
    """Barge-in: user onset to the decision."""
    stopped: float | None = None
    """Barge-in: user onset to a silent speaker."""


class TimingBook:
    def __init__(self) -> None:
        self.turns: dict[int, TurnTiming] = {}

    def row(self, turn: int) -> TurnTiming:
        return self.turns.setdefault(turn, TurnTiming(turn))

    def latency(self, ev: TurnLatency) -> None:
        r = self.row(ev.turn)
        r.end_of_turn, r.asr_final = ev.end_of_turn, ev.asr_final
        r.llm_first_token, r.tts_first_audio, r.voice_to_voice = ev.llm_first_token, ev.tts_first_audio, ev.voice_to_voice

    def column(self, name: str) -> list[float]:
        return [v for r in self.turns.values() if (v := getattr(r, name)) is not None]

    def stat(self, name: str, q: float) -> float | None:
        return percentile(self.column(name), q)

    def clear(self) -> None:
        self.turns.clear()


THRESHOLD_PREFIX = "thr_"
"""A policy frame's ``thr_<class>`` entry is the decision threshold of ``<class>``."""


class SessionView:
    """Everything the panes show; ``apply`` events, then read and reset ``dirty``."""

    def __init__(self) -> None:
        self.transcript = Transcript()
        self.state = AgentState.LISTENING
        self.muted = False
        self.ended: str | None = None
        self.speaker = ""
        """Who is speaking, as the speaker gate last heard it (``user``, ``agent``,
        ``other_speaker``, ``unknown``; empty when nobody is, or the gate is off)."""
        self.speaker_sim: float | None = None
        """The similarity behind ``speaker`` (to the user, or to the agent for ``agent``)."""
        self.signals: dict[str, Series] = {"mic_db": Series(), "out_db": Series(), "vad": Series()}
        self.probs: dict[str, Series] = {}
        self.thresholds: dict[str, float] = {}
        """Decision thresholds per class, as the policy publishes them in its frames
        (``thr_<class>`` entries); classes without one are drawn against 0.5."""
        self.policy_name = ""
        self.now = 0.0
        """The latest session time seen (the right edge of the signal windows)."""
        self.timing = TimingBook()
        self.log: deque[LogLine] = deque(maxlen=MAX_LOG)
        self.new_log: list[LogLine] = []
        self.errors: list[LogLine] = []
        """Stage errors and notices since the last sync: the app turns them into notifications."""
        self.dirty: set[str] = set()
        self.events = 0

    def apply_all(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.apply(ev)

    def apply(self, ev: Event) -> None:
        self.events += 1
        if ev.t > self.now:
            self.now = ev.t
        tr = self.transcript
        match ev:
            case Levels():
                self.signals["mic_db"].add(ev.t, ev.mic_db)
                self.signals["out_db"].add(ev.t, ev.out_db)
                self.signals["vad"].add(ev.t, ev.vad)
                self.dirty.add("signals")
                return
            case PolicyFrame():
                if ev.policy != self.policy_name:
                    self.policy_name = ev.policy
                    self.probs = {}
                    self.thresholds = {}
                for name, p in ev.probs:
                    if name.startswith(THRESHOLD_PREFIX):
                        self.thresholds[name[len(THRESHOLD_PREFIX):]] = p
                    else:
                        self.probs.setdefault(name, Series()).add(ev.t, p)
                self.dirty.add("signals")
                return
            case ASRPartial():
                tr.user_text(ev.utterance, ev.text, ev.t, final=False)
            case ASRFinal():
                tr.user_text(ev.utterance, ev.text, ev.t, final=True)
            case UserSpeechStarted():
                tr.speech_started(ev.agent_speaking)
                self._log(ev, "speech start", "over the agent" if ev.agent_speaking else "")
            case UserSpeechEnded():
                self._log(ev, "speech end", f"{ev.duration * 1000:.0f} ms of speech")
                if self.speaker:
                    self.speaker, self.speaker_sim = "", None
                    self.dirty.add("state")
            case SpeakerHeard():
                self.speaker = ev.label
                self.speaker_sim = ev.sim_agent if ev.label == "agent" else ev.sim_user
                self.dirty.add("state")
                return
            case OtherSpeaker():
                tr.overlap_ignored()
                self.speaker = ev.label
                self.speaker_sim = ev.sim_agent if ev.label == "agent" else ev.sim_user
                self.dirty.add("state")
                sims = ", ".join(f"{k} {v:.2f}" for k, v in (("user", ev.sim_user), ("agent", ev.sim_agent))
                                 if v is not None)
                who = "the agent's own voice (echo)" if ev.label == "agent" else "another voice"
                self._log(ev, "other speaker", f"{who} kept from {ev.suppressed.replace('_', ' ')} "
                          f"(similarity {sims or '-'}, confidence {ev.confidence:.2f})", "decision")
            case EndOfTurn():
                self._log(ev, "end of turn", f"turn {ev.turn}, {ev.delay * 1000:.0f} ms after speech: {ev.text!r}",
                          "decision")
            case AgentTurnStarted():
                tr.agent_started(ev.turn, ev.t)
                self._log(ev, "reply start", f"turn {ev.turn}")
            case AudioPlayed():
                if ev.turn < 0 or not ev.text:
                    return  # the agent's own mm-hmm (logged as a Backchannel), or a chunk with no word end
                tr.agent_played(ev.turn, ev.text, ev.t)
            case AgentTurnEnded():
                tr.agent_ended(ev.turn, ev.heard, ev.generated, ev.interrupted, ev.t)
                what = "interrupted" if ev.interrupted else "finished"
                self._log(ev, "reply end", f"turn {ev.turn} {what}: heard {len(ev.heard.split())} of "
                          f"{len(ev.generated.split())} words")
            case BargeIn():
                tr.barge_in()
                if ev.was_paused:
                    tr.pause_resolved(ev.t, committed=True)
                self.timing.row(ev.turn).reaction = ev.reaction
                self.dirty.add("timing")
                after = " after a pause" if ev.was_paused else ""
                self._log(ev, "BARGE-IN", f"turn {ev.turn}, reaction {ev.reaction * 1000:.0f} ms{after}: {ev.text!r}",
                          "decision")
            case AgentPaused():
                tr.paused(ev.t)
                self._log(ev, "PAUSE", f"turn {ev.turn}, reaction {ev.reaction * 1000:.0f} ms: {ev.text!r}",
                          "decision")
            case AgentResumed():
                tr.pause_resolved(ev.t, committed=False, timeout=ev.timeout)
                why = " (timeout)" if ev.timeout else ""
                self._log(ev, "resume", f"turn {ev.turn} after {ev.paused_for * 1000:.0f} ms{why}", "decision")
            case BackchannelCancelled():
                self._log(ev, "backchannel cut", "agent: the user spoke again within it", "decision")
            case AgentStopped():
                self.timing.row(ev.turn).stopped = ev.latency
                self._log(ev, "agent stopped", f"turn {ev.turn}, silent {ev.latency * 1000:.0f} ms after onset")
            case Backchannel():
                if ev.who == "user":
                    tr.user_backchannel(ev.text)
                else:
                    tr.agent_backchannel(ev.text, ev.t)
                self._log(ev, "backchannel", f"{ev.who}: {ev.text!r}", "decision")
            case OverlapIgnored():
                tr.overlap_ignored()
                self._log(ev, "overlap ignored", f"{ev.duration * 1000:.0f} ms {ev.text!r}", "decision")
            case StateChanged():
                self.state = ev.state
                self.dirty.add("state")
                self._log(ev, "state", state_label(ev.state))
            case VoiceEnrolled():
                self._log(ev, "voice", f"enrolled '{ev.name}' ({ev.speech_s:.1f} s of speech): only this voice "
                          "takes the turn now")
            case Muted():
                self.muted = ev.muted
                self.dirty.add("state")
                self._log(ev, "mic", "muted" if ev.muted else "unmuted")
            case TurnLatency():
                self.timing.latency(ev)
                self.dirty.add("timing")
                v2v = "-" if ev.voice_to_voice is None else f"{ev.voice_to_voice * 1000:.0f} ms"
                self._log(ev, "latency", f"turn {ev.turn} voice-to-voice {v2v}")
            case StageError():
                line = self._log(ev, "ERROR", f"{ev.stage}: {ev.message}", "error")
                self.errors.append(line)
            case Notice():
                line = self._log(ev, "notice", ev.message, "warning")
                self.errors.append(line)
            case SessionEnded():
                self.ended = ev.reason
                self.dirty.add("state")
                extra = f", {ev.dropped_frames} input frames dropped" if ev.dropped_frames else ""
                self._log(ev, "session ended", ev.reason + extra)
            case _:
                lang = getattr(ev, "language", None)
                if lang:
                    self._log(ev, "language", str(lang))
                return
        if tr.changed or tr.removed:
            self.dirty.add("conversation")

    def _log(self, ev: Event, kind: str, text: str, severity: str = "info") -> LogLine:
        line = LogLine(ev.t, kind, text, severity)  # type: ignore[arg-type]
        self.log.append(line)
        self.new_log.append(line)
        self.dirty.add("log")
        return line

    def take_dirty(self) -> set[str]:
        d, self.dirty = self.dirty, set()
        return d

    def clear(self) -> None:
        """The ``clear`` key: empty the transcript, the timing book and the log."""
        self.transcript.clear()
        self.timing.clear()
        self.log.clear()
        self.new_log.clear()
        self.dirty |= {"conversation", "timing", "log"}


def state_label(state: AgentState) -> str:
    """LISTENING / THINKING / SPEAKING / BOTH (overlap) / PAUSED / MUTED."""
    return "BOTH" if state is AgentState.OVERLAP else state.value.upper()
