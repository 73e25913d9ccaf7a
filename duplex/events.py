"""Frozen, slotted event dataclasses: the one language the engine speaks.

Every event carries ``t``, seconds on the session clock (injected: monotonic live,
simulated for files and replay). Two families, after Pipecat's frames:

* :class:`ControlEvent` — turn-taking facts and decisions. Never dropped, never wait
  behind data. Those with ``DECISION = True`` are what replay compares byte for byte.
* :class:`DataEvent` — high-rate signals (levels, probabilities, played chunks).
  Consumers may drop them under load (and count what they drop).

Events serialise to one JSON object per line (``to_json``/``event_from_dict``);
``type`` names the class in snake case.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar


class AgentState(str, Enum):
    """What the conversation looks like from outside."""

    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    OVERLAP = "overlap"
    PAUSED = "paused"
    """The agent's reply is held mid-word while the policy decides (see ``Decision.PAUSE``)."""
    MUTED = "muted"


class Decision(str, Enum):
    """Turn-taking decisions a policy can make on a frame."""

    # While the agent speaks.
    CONTINUE = "continue"
    BACKCHANNEL = "backchannel"
    BARGE_IN = "barge_in"
    PAUSE = "pause"
    """Unsure: hold playback now, keep the reply; decide later (see :mod:`duplex.turn`)."""
    RESUME = "resume"
    """After a PAUSE: it was a backchannel or noise; play on from the same sample."""
    # While the user speaks (or has just stopped).
    HOLD = "hold"
    END_OF_TURN = "end_of_turn"
    BACKCHANNEL_OPPORTUNITY = "backchannel_opportunity"


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: ``t`` is seconds on the session clock."""

    t: float
    DECISION: ClassVar[bool] = False
    NOT_COMPARED: ClassVar[tuple[str, ...]] = ()
    """Fields a replay does not compare: they depend on compute speed, not on decisions."""

    @property
    def type(self) -> str:
        return _snake(type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, float):
                v = round(v, 6)
            d[f.name] = v
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    def decision_key(self) -> str:
        """The JSON a replay compares byte for byte (``to_json`` less ``NOT_COMPARED``)."""
        d = {k: v for k, v in self.to_dict().items() if k not in self.NOT_COMPARED}
        return json.dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ControlEvent(Event):
    """Turn-taking facts: never dropped."""


@dataclass(frozen=True, slots=True)
class DataEvent(Event):
    """High-rate signals: may be dropped (and counted) by slow consumers."""


# --- the user's side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSpeechStarted(ControlEvent):
    """VAD onset. ``agent_speaking`` tells an overlap from a fresh turn."""

    agent_speaking: bool = False
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class UserSpeechEnded(ControlEvent):
    """VAD offset (after the hangover); ``duration`` is the speech run in seconds."""

    duration: float = 0.0
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ASRPartial(DataEvent):
    """A growing hypothesis while the user speaks."""

    text: str = ""
    utterance: int = 0


@dataclass(frozen=True, slots=True)
class ASRFinal(ControlEvent):
    """The final hypothesis of an utterance; ``compute`` is its wall-clock cost."""

    text: str = ""
    utterance: int = 0
    compute: float = 0.0


@dataclass(frozen=True, slots=True)
class EndOfTurn(ControlEvent):
    """The policy decided the user finished; ``delay`` is seconds after speech ended."""

    turn: int = 0
    delay: float = 0.0
    text: str = ""
    DECISION: ClassVar[bool] = True


# --- the agent's side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentTurnStarted(ControlEvent):
    turn: int = 0
    prompt: str = ""
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class LLMToken(DataEvent):
    turn: int = 0
    text: str = ""


@dataclass(frozen=True, slots=True)
class TextToTTS(ControlEvent):
    """A text chunk handed to the synthesiser (first a clause, then sentences)."""

    turn: int = 0
    index: int = 0
    text: str = ""


@dataclass(frozen=True, slots=True)
class AudioPlayed(DataEvent):
    """One chunk really sent to the speaker; ``text`` is the words it completes."""

    turn: int = 0
    sample: int = 0
    n_samples: int = 0
    text: str = ""
    level: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentTurnEnded(ControlEvent):
    """The reply ended: ``heard`` is what the listener heard, ``generated`` all the LLM wrote."""

    turn: int = 0
    interrupted: bool = False
    generated: str = ""
    heard: str = ""
    DECISION: ClassVar[bool] = True
    # How far the LLM got before a barge-in depends on the machine's speed; what was
    # heard does not (lockstep playback waits for audio).
    NOT_COMPARED: ClassVar[tuple[str, ...]] = ("generated",)


# --- decisions while both may speak ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BargeIn(ControlEvent):
    """The user took the floor: the reply is cancelled.

    ``onset`` is when the user's speech began; ``reaction`` the decision time after it.
    """

    turn: int = 0
    onset: float = 0.0
    reaction: float = 0.0
    text: str = ""
    was_paused: bool = False
    """The reply had been paused (``AgentPaused``) before this commit."""
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AgentPaused(ControlEvent):
    """Speech under the agent and the policy is unsure: playback holds, the reply lives on.

    ``onset`` is when the user's speech began; ``reaction`` the decision time after it.
    """

    turn: int = 0
    onset: float = 0.0
    reaction: float = 0.0
    text: str = ""
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AgentResumed(ControlEvent):
    """A pause ended without a barge-in: playback goes on from the sample it held.

    ``paused_for`` is how long the agent was silent; ``timeout`` says the pause ran
    out (``engine.pause_timeout_s``) with the user silent rather than the policy resuming.
    """

    turn: int = 0
    paused_for: float = 0.0
    timeout: bool = False
    text: str = ""
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class BackchannelCancelled(ControlEvent):
    """The agent's own "mm-hmm" was cut because the user spoke again within it."""

    onset: float = 0.0
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Backchannel(ControlEvent):
    """A backchannel: ``who`` is ``user`` (agent keeps talking) or ``agent`` (its own mm-hmm)."""

    who: str = "user"
    text: str = ""
    onset: float = 0.0
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OverlapIgnored(ControlEvent):
    """User sound during agent speech that the policy let pass (noise, cough: ``continue``)."""

    onset: float = 0.0
    duration: float = 0.0
    text: str = ""
    DECISION: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OtherSpeaker(ControlEvent):
    """Speech the speaker gate judged not the user's held its decision back.

    ``label`` is ``agent`` (what is left of the agent's own voice after echo
    cancellation) or ``other_speaker`` (a TV, another person); ``suppressed`` the
    decision it overrode (``barge_in``, ``pause``, ``end_of_turn``); ``onset`` when that
    speech began. ``sim_user``/``sim_agent`` are the running similarities (1.6 s
    equivalent; ``None`` without a profile), ``confidence`` the gate's (0..1).
    """

    label: str = "other_speaker"
    suppressed: str = ""
    onset: float = 0.0
    sim_user: float | None = None
    sim_agent: float | None = None
    confidence: float = 0.0
    DECISION: ClassVar[bool] = True
    # Similarities are float32 LSTM outputs: the label and the time are the decision.
    NOT_COMPARED: ClassVar[tuple[str, ...]] = ("sim_user", "sim_agent", "confidence")


@dataclass(frozen=True, slots=True)
class SpeakerHeard(DataEvent):
    """The speaker gate's reading of the current speech run, each time it embeds.

    ``label`` is ``user``, ``agent``, ``other_speaker`` or ``unknown``; ``window`` the
    seconds of the run heard so far. What the TUI shows as "who is speaking".
    """

    label: str = "unknown"
    sim_user: float | None = None
    sim_agent: float | None = None
    confidence: float = 0.0
    window: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentStopped(ControlEvent):
    """The speaker went silent after a barge-in; ``latency`` is onset to silence."""

    turn: int = 0
    latency: float = 0.0


@dataclass(frozen=True, slots=True)
class PolicyFrame(DataEvent):
    """Per-frame policy output (for plots): class probabilities and the decision."""

    policy: str = ""
    decision: Decision = Decision.CONTINUE
    probs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Levels(DataEvent):
    """Per-frame signal levels (dBFS) and VAD probability."""

    mic_db: float = -120.0
    out_db: float = -120.0
    vad: float = 0.0


@dataclass(frozen=True, slots=True)
class StateChanged(ControlEvent):
    state: AgentState = AgentState.LISTENING


@dataclass(frozen=True, slots=True)
class TurnLatency(ControlEvent):
    """Per-turn latency breakdown in seconds (``None`` where a stage did not run).

    ``voice_to_voice`` runs from the end of the user's speech to the first agent audio
    on the session clock; the other figures are compute times of each stage.
    """

    turn: int = 0
    end_of_turn: float = 0.0
    asr_final: float = 0.0
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    voice_to_voice: float | None = None


@dataclass(frozen=True, slots=True)
class StageError(ControlEvent):
    """A stage failed; the conversation goes on where it can."""

    stage: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Notice(ControlEvent):
    """Something the user should know (e.g. a dropped-frame count, a fallback voice)."""

    message: str = ""


@dataclass(frozen=True, slots=True)
class Muted(ControlEvent):
    muted: bool = True


@dataclass(frozen=True, slots=True)
class VoiceEnrolled(ControlEvent):
    """The user enrolled their voice during the conversation (the TUI's ``e``): from now
    on the speaker gate lets only this voice take the turn. ``profile`` is the voice
    profile as JSON, embedding included, so a replay applies the same one at the same frame."""

    name: str = ""
    speech_s: float = 0.0
    profile: str = ""


@dataclass(frozen=True, slots=True)
class Arrived(ControlEvent):
    """An asynchronous result was first used on frame ``frame`` (live runs; see
    :mod:`duplex.pacing`). Recorded so that a replay uses it on the same frame."""

    key: str = ""
    frame: int = 0
    value: int = 0


@dataclass(frozen=True, slots=True)
class SessionEnded(ControlEvent):
    reason: str = "input ended"
    dropped_frames: int = 0


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)).lower()


EVENT_TYPES: dict[str, type[Event]] = {}


def _register(cls: type[Event]) -> None:
    for sub in cls.__subclasses__():
        if sub not in (ControlEvent, DataEvent):
            EVENT_TYPES[_snake(sub.__name__)] = sub
        _register(sub)


_register(Event)

_ENUM_FIELDS = {"decision": Decision, "state": AgentState}


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from ``to_dict`` output; raises ``KeyError``/``TypeError`` on junk."""
    d = dict(d)
    cls = EVENT_TYPES[d.pop("type")]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name in _ENUM_FIELDS:
            v = _ENUM_FIELDS[f.name](v)
        elif f.name == "probs":
            v = tuple((str(k), float(p)) for k, p in v)
        kwargs[f.name] = v
    return cls(**kwargs)


__all__ = [name for name in dir() if not name.startswith("_")]
_ = field  # re-exported for subclasses in other modules


@dataclass(frozen=True, slots=True)
class LanguageDetected(ControlEvent):
    """The recogniser's language for the utterance just finished (ISO 639-1, e.g. ``es``).

    Emitted when it differs from the previous turn's; the reply follows it
    (see :mod:`duplex.stages.multilingual`).
    """

    language: str = ""
    probability: float = 0.0


# Defined after the first registration pass above: register it and export it too.
EVENT_TYPES["language_detected"] = LanguageDetected
__all__.append("LanguageDetected")


@dataclass(frozen=True, slots=True)
class EchoDelay(ControlEvent):
    """The echo canceller's view of the room (:mod:`duplex.audio.aec`).

    ``delay_ms`` is the playback-to-capture delay in use (estimated or configured),
    ``erle_db`` the echo return loss enhancement over the last seconds of agent audio
    (0 until measured), ``backend`` the canceller (``webrtc``, ``speex``).
    """

    delay_ms: float = 0.0
    erle_db: float = 0.0
    backend: str = ""


EVENT_TYPES["echo_delay"] = EchoDelay
__all__.append("EchoDelay")
