"""What goes over the wire: engine events mapped to MQTT messages, and commands parsed.

Every JSON payload the bridge publishes is one object with an envelope::

    {"schema": 1, "type": "barge_in", "session": "…", "device": "kitchen",
     "seq": 17, "ts": "2025-01-01T12:00:00.123Z", "t": 12.345, …fields of the type}

``seq`` counts the messages of one session from 1 with no gaps; it is given when a
message is first sent, and a message sent again after a reconnect (a QoS 1 duplicate)
carries the same ``seq``, so consumers drop any ``seq`` not above the last they saw.
``ts`` is the wall-clock time of the event (UTC), ``t`` the session clock.
``schema/payload.schema.json`` describes every type; ``docs/mqtt.md`` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import cache
from importlib import resources
from typing import Any

from duplex.errors import MQTTError
from duplex.events import (
    AgentState,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    AgentPaused,
    AgentResumed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    Muted,
    OtherSpeaker,
    SessionEnded,
    StageError,
    StateChanged,
    TurnLatency,
    UserSpeechEnded,
    UserSpeechStarted,
)
from duplex.mqtt.topics import Topics

SCHEMA_VERSION = 1

STATE = "state"
EVENT_TYPES = (
    "user_turn_started",
    "user_turn_ended",
    "end_of_turn",
    "agent_turn_started",
    "agent_turn_ended",
    "barge_in",
    "agent_paused",
    "agent_resumed",
    "other_speaker",
    "backchannel",
    "latency",
    "error",
    "session_ended",
    "outbox_dropped",
)
"""Types published under ``<prefix>/<device>/event/<type>``."""

MAX_COMMAND_BYTES = 4096
MAX_SAY_CHARS = 1000

WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """``2025-01-01T12:00:00.123Z``: what displays and Home Assistant parse without help."""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@dataclass(frozen=True, slots=True, eq=False)
class OutMessage:
    """One message waiting to be published; the envelope is added by :meth:`encode`."""

    topic: str
    type: str
    body: Mapping[str, Any]
    t: float
    """Session clock of the event, seconds."""
    wall: datetime
    """Wall clock of the event (formatted only when sent: on_event stays cheap)."""
    retain: bool = False

    @property
    def ts(self) -> str:
        """The wall clock as ISO 8601, UTC, milliseconds."""
        return iso(self.wall)

    def envelope(self, session: str, device: str, seq: int) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "type": self.type,
            "session": session,
            "device": device,
            "seq": seq,
            "ts": self.ts,
            "t": round(self.t, 6),
            **self.body,
        }

    def encode(self, session: str, device: str, seq: int) -> bytes:
        return json.dumps(
            self.envelope(session, device, seq), ensure_ascii=False, separators=(",", ":")
        ).encode()


class EventMapper:
    """Maps engine events to MQTT messages; keeps the little state the mapping needs.

    * ``UserSpeechEnded`` is not published by itself: its duration rides on the
      ``user_turn_ended`` published at the following ``ASRFinal`` (which has the transcript).
    * ``StateChanged`` and ``Muted`` fold into one retained ``state`` message
      (``state`` is ``muted`` while muted), published only when it changes.
    * Everything else without a mapping (levels, tokens, played audio…) gives ``None``.
    """

    def __init__(self, topics: Topics, wall: WallClock = utc_now) -> None:
        self.topics = topics
        self._wall = wall
        self._event_topics = {t: topics.event(t) for t in EVENT_TYPES}
        self._state = AgentState.LISTENING
        self._muted = False
        self._published: tuple[str, bool] | None = None
        self._speech_ms: int | None = None
        self.last_t = 0.0

    @property
    def state(self) -> tuple[str, bool]:
        """The effective ``(state, muted)`` pair the state topic should show."""
        return ("muted" if self._muted else self._state.value, self._muted)

    def event(self, type_: str, t: float, **body: Any) -> OutMessage:
        return OutMessage(self._event_topics[type_], type_, body, t, self._wall())

    def state_message(self, t: float) -> OutMessage:
        state, muted = self.state
        self._published = (state, muted)
        return OutMessage(self.topics.state, STATE, {"state": state, "muted": muted}, t, self._wall(), retain=True)

    def error(self, t: float, message: str, *, source: str, stage: str = "", command: str = "") -> OutMessage:
        body: dict[str, Any] = {"source": source, "message": message}
        if stage:
            body["stage"] = stage
        if command:
            body["command"] = command[:200]
        return self.event("error", t, **body)

    def _state_if_changed(self, t: float) -> OutMessage | None:
        return None if self.state == self._published else self.state_message(t)

    def map(self, ev: Event) -> OutMessage | None:
        self.last_t = max(self.last_t, ev.t)
        t = ev.t
        match ev:
            case StateChanged(state=state):
                if state is AgentState.MUTED:
                    self._muted = True
                else:
                    self._state = state
                return self._state_if_changed(t)
            case Muted(muted=muted):
                self._muted = muted
                return self._state_if_changed(t)
            case UserSpeechStarted(agent_speaking=overlap):
                self._speech_ms = None
                return self.event("user_turn_started", t, overlap=overlap)
            case UserSpeechEnded(duration=duration):
                self._speech_ms = _ms(duration)
                return None
            case ASRFinal(text=text, utterance=utterance, compute=compute):
                speech_ms, self._speech_ms = self._speech_ms, None
                return self.event(
                    "user_turn_ended", t, utterance=utterance, transcript=text,
                    speech_ms=speech_ms, asr_ms=_ms(compute),
                )
            case EndOfTurn(turn=turn, delay=delay, text=text):
                return self.event("end_of_turn", t, turn=turn, delay_ms=_ms(delay), transcript=text)
            case AgentTurnStarted(turn=turn, prompt=prompt):
                return self.event("agent_turn_started", t, turn=turn, prompt=prompt)
            case AgentTurnEnded(turn=turn, interrupted=interrupted, generated=generated, heard=heard):
                return self.event(
                    "agent_turn_ended", t, turn=turn, interrupted=interrupted, generated=generated, heard=heard
                )
            case BargeIn(turn=turn, onset=onset, reaction=reaction, text=text, was_paused=was_paused):
                return self.event(
                    "barge_in", t, turn=turn, reaction_ms=_ms(reaction), onset_t=round(onset, 6), transcript=text,
                    was_paused=was_paused,
                )
            case AgentPaused(turn=turn, onset=onset, reaction=reaction, text=text):
                return self.event(
                    "agent_paused", t, turn=turn, reaction_ms=_ms(reaction), onset_t=round(onset, 6), transcript=text
                )
            case AgentResumed(turn=turn, paused_for=paused_for, timeout=timeout, text=text):
                return self.event("agent_resumed", t, turn=turn, paused_ms=_ms(paused_for), timeout=timeout,
                                  transcript=text)
            case OtherSpeaker(label=label, suppressed=suppressed, onset=onset, sim_user=su, sim_agent=sa,
                              confidence=confidence):
                return self.event("other_speaker", t, label=label, suppressed=suppressed, onset_t=round(onset, 6),
                                  sim_user=su, sim_agent=sa, confidence=confidence)
            case Backchannel(who=who, text=text):
                return self.event("backchannel", t, who=who, text=text)
            case TurnLatency() as lat:
                return self.event(
                    "latency", t, turn=lat.turn,
                    end_of_turn_ms=_ms(lat.end_of_turn), asr_final_ms=_ms(lat.asr_final),
                    llm_first_token_ms=_ms(lat.llm_first_token), tts_first_audio_ms=_ms(lat.tts_first_audio),
                    voice_to_voice_ms=_ms(lat.voice_to_voice),
                )
            case StageError(stage=stage, message=message):
                return self.error(t, message, source="stage", stage=stage)
            case SessionEnded(reason=reason, dropped_frames=dropped):
                return self.event("session_ended", t, reason=reason, dropped_frames=dropped)
            case _:
                return None


# --- commands ----------------------------------------------------------------------------


class CommandError(MQTTError):
    """A message on the command topic was not a valid command."""


class CommandName(str, Enum):
    MUTE = "mute"
    UNMUTE = "unmute"
    SAY = "say"
    END = "end"


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command: ``say`` needs ``text``; ``end`` may carry a ``reason``."""

    name: CommandName
    text: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if self.name is CommandName.SAY:
            if not self.text.strip():
                raise CommandError("say needs a non-empty text")
            if len(self.text) > MAX_SAY_CHARS:
                raise CommandError(f"say text is {len(self.text)} characters; the limit is {MAX_SAY_CHARS}")
        elif self.text:
            raise CommandError(f"{self.name.value} takes no text")
        if self.reason and self.name is not CommandName.END:
            raise CommandError(f"{self.name.value} takes no reason")


_KNOWN = ", ".join(c.value for c in CommandName)


def parse_command(payload: bytes) -> Command:
    """Parse a command-topic payload: a JSON object (see ``schema/command.schema.json``)
    or a bare word: ``mute``, ``unmute``, ``end [reason]``, ``say <text>``.

    Raises :class:`CommandError` with a message that says what was wrong.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError("command is not UTF-8 text") from None
    if not text:
        raise CommandError(f"empty command (known: {_KNOWN})")
    if text.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"command is not valid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(data, dict):
            raise CommandError('a JSON command must be an object, e.g. {"command": "mute"}')
        validate("command", data, CommandError)
        return Command(CommandName(data["command"]), data.get("text", ""), data.get("reason", ""))
    word, _, rest = text.partition(" ")
    rest = rest.strip()
    try:
        name = CommandName(word.lower())
    except ValueError:
        raise CommandError(f"unknown command {word[:40]!r} (known: {_KNOWN})") from None
    if name is CommandName.SAY:
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
            rest = rest[1:-1]
        return Command(name, text=rest)
    if name is CommandName.END:
        return Command(name, reason=rest)
    if rest:
        raise CommandError(f"{name.value} takes no argument, got {rest[:40]!r}")
    return Command(name)


# --- schemas -------------------------------------------------------------------------------


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``name`` is ``payload``, ``command`` or ``discovery`` (files in ``duplex/mqtt/schema``)."""
    text = resources.files("duplex.mqtt").joinpath("schema", f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator(name: str, ref: str = "") -> Any:
    from jsonschema import Draft202012Validator  # lazy: only commands and tests need it

    schema = load_schema(name)
    if ref:
        schema = {**schema, "$ref": f"#/$defs/{ref}"}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(name: str, data: Any, error: type[Exception] = ValueError, *, ref: str = "") -> None:
    """Validate ``data`` against schema ``name`` (optionally one of its ``$defs``); raise ``error``."""
    from jsonschema.exceptions import best_match

    err = best_match(_validator(name, ref).iter_errors(data))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path)
        raise error(f"{where + ': ' if where else ''}{err.message}")
