"""Replay: a recorded ``mic.wav`` through the whole pipeline again, on the simulated clock.

The microphone side is fixed (the recording); the agent's side is regenerated. A session
recorded in lockstep replays in lockstep; one recorded live replays with its recorded
arrivals (:mod:`duplex.pacing`: each asynchronous result used on the frame the live run
used it). Either way the same session, config and models give byte-identical decision
events on every replay, and the recording's own. Outside commands the recording
received (``say``, mute, a policy switch, an early end) are re-issued at the frame they
took effect, reconstructed from the recorded events (:func:`recorded_commands`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.source import frames_of, pace
from duplex.config import Config, load_config
from duplex.config import replace as replace_section
from duplex.errors import ConfigError, SessionError, SpeakerError
from duplex.events import AgentTurnStarted, EndOfTurn, Event, Muted, Notice, SessionEnded, VoiceEnrolled
from duplex.pacing import Pacing
from duplex.session.store import Session
from duplex.speaker_profiles import VoiceProfile
from duplex.stages.speaker import recorded_gate

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
NATURAL_END = "input ended"
_POLICY_SWITCH = "policy switched to "
_AEC_NOTICE = "echo cancellation: "


# --- configuration -------------------------------------------------------------------------


def session_config(session: Session, profile: str | None = None, overrides: Sequence[dict[str, Any]] = ()) -> Config:
    """The config to replay with: the recorded one (or ``profile``), then ``overrides``.

    Keys this duplex no longer knows are dropped with a warning (a session recorded
    today must replay tomorrow); a recorded value of the wrong type is a
    :class:`SessionError`. MQTT is always off: a replay is not a device.
    """
    from duplex.config import _build, _merge  # the loader's own validation, on a dict

    off = {"mqtt": {"enabled": False}}
    if profile is not None:
        cfg = load_config(profile, [*overrides, off])
    else:
        data = _known_keys(Config, session.config, "", session.path)
        try:
            _build(Config, data)
        except ConfigError as exc:
            raise SessionError(f"{session.path / 'session.json'}: config: {exc}") from None
        for o in [*overrides, off]:
            data = _merge(data, o)
        cfg = _build(Config, data)
    if cfg.aec.mode == "auto":
        # `auto` cancels echo only on a live microphone, and a replay is never live: do
        # what the recording did (its canceller announced itself), or nothing.
        cfg = replace_section(cfg, "aec", mode=recorded_aec(session.events) or "off")
    return cfg


def recorded_aec(events: Sequence[Event]) -> str | None:
    """The echo-cancellation backend the recording ran, from the notice it published."""
    for e in events:
        if isinstance(e, Notice) and e.message.startswith(_AEC_NOTICE):
            return e.message[len(_AEC_NOTICE):].split(",")[0].strip() or None
    return None


def _known_keys(cls: Any, data: dict[str, Any], prefix: str, where: Path) -> dict[str, Any]:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k not in hints:
            log.warning("%s: recorded config key %s%s is unknown to this duplex; ignored", where, prefix, k)
            continue
        tp = hints[k]
        out[k] = _known_keys(tp, v, f"{prefix}{k}.", where) if dataclasses.is_dataclass(tp) and isinstance(v, dict) else v
    return out


# --- recorded commands ---------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """An outside command, re-issued just before the engine ticks frame ``frame``."""

    frame: int
    name: str
    """``say``, ``mute``, ``unmute``, ``policy``, ``voice`` or ``end``."""
    arg: str = ""


def recorded_commands(events: Sequence[Event], n_frames: int) -> list[Command]:
    """Outside commands the recorded engine obeyed, from the traces they left.

    * ``say``: an :class:`AgentTurnStarted` with no :class:`EndOfTurn` of the same turn
      at the same instant (a reply the user did not prompt);
    * mute/unmute: :class:`Muted`; a policy switch: its :class:`Notice`;
    * ``voice``: a :class:`VoiceEnrolled` (the profile itself is in the event);
    * ``end``: a :class:`SessionEnded` for another reason than the input ending.
    """
    out: list[Command] = []
    eot_at = {(e.turn, round(e.t, 6)) for e in events if isinstance(e, EndOfTurn)}
    for e in events:
        frame = max(0, int(round(e.t / FRAME_S)))
        match e:
            case AgentTurnStarted() if (e.turn, round(e.t, 6)) not in eot_at:
                out.append(Command(frame, "say", e.prompt))
            case Muted():
                out.append(Command(frame, "mute" if e.muted else "unmute"))
            case Notice() if e.message.startswith(_POLICY_SWITCH):
                out.append(Command(frame, "policy", e.message[len(_POLICY_SWITCH):].strip()))
            case VoiceEnrolled():
                out.append(Command(frame, "voice", e.profile))
            case SessionEnded() if e.reason != NATURAL_END:
                out.append(Command(max(0, n_frames - 1), "end", e.reason))
            case _:
                pass
    return out


class ReplaySource:
    """The recorded microphone as an audio source that re-issues recorded commands.

    ``engine`` must be set (``on_engine``) before iteration when there are commands.
    """

    live = False
    finite = True

    def __init__(self, mic: np.ndarray, commands: Sequence[Command] = (), *, realtime: bool = False,
                 name: str = "replay", switch_policy: bool = True, pacing: Pacing | None = None) -> None:
        self.mic = mic
        self.pacing = pacing
        """The recorded arrivals of a live session (the engine follows them), or None."""
        self.commands = sorted(commands, key=lambda c: c.frame)
        self.realtime = realtime
        self.name = name
        self.switch_policy = switch_policy
        self.engine: Any = None

    async def frames(self) -> AsyncIterator[np.ndarray]:
        t0 = asyncio.get_running_loop().time()
        pending = list(self.commands)
        for i, frame in enumerate(frames_of(self.mic)):
            while pending and pending[0].frame <= i:
                self._issue(pending.pop(0))
            if self.realtime:
                await pace(i, t0)
            yield frame

    def _issue(self, c: Command) -> None:
        eng = self.engine
        if eng is None:
            raise SessionError("replay source has recorded commands but no engine to give them to")
        match c.name:
            case "say":
                eng.say(c.arg)
            case "mute" | "unmute":
                eng.set_muted(c.name == "mute")
            case "policy" if self.switch_policy:
                eng.set_policy(c.arg)
            case "voice":
                eng.use_voice(VoiceProfile.from_dict(json.loads(c.arg), "the voice enrolled in the recording"))
            case "end":
                eng.end(c.arg)
            case _:
                pass


# --- running --------------------------------------------------------------------------------


async def replay(
    session: Session,
    cfg: Config,
    models: Any,
    *,
    realtime: bool = False,
    session_dir: Path | None = None,
    subscribers: Sequence[Callable[[Event], None]] = (),
    switch_policy: bool = True,
) -> Any:
    """Run one replay of ``session``; returns :class:`duplex.app.RunResult`.

    The speaker gate hears with the voice profiles the session recorded (``session.json``'s
    ``speaker_gate``), not whatever is enrolled now; where those cannot be used (another
    encoder) the replay keeps today's and says so.
    """
    from duplex.app import run_conversation

    models = with_recorded_voices(session, models)

    source = ReplaySource(session.mic, recorded_commands(session.events, session.n_frames), realtime=realtime,
                          name=f"replay of {session.path.name}", switch_policy=switch_policy,
                          pacing=recorded_pacing(session))

    def on_engine(engine: Any) -> None:
        source.engine = engine

    return await run_conversation(cfg, models, source, session_dir=session_dir, subscribers=list(subscribers),
                                  on_engine=on_engine)


def with_recorded_voices(session: Session, models: Any) -> Any:
    """``models`` with a speaker gate holding the profiles ``session`` recorded (if it did)."""
    record = session.meta.get("speaker_gate")
    gate = getattr(models, "speaker_gate", None)
    if not record or gate is None:
        return models
    try:
        return replace(models, speaker_gate=recorded_gate(record, gate))
    except SpeakerError as exc:  # another encoder, a corrupt profile
        log.warning("replaying with today's voice profiles, not the recorded ones: %s", exc)
        return models


def recorded_pacing(session: Session) -> Pacing | None:
    """The arrivals a live session recorded, to replay it exactly (None for lockstep
    sessions and for live ones older duplex versions recorded without them)."""
    return Pacing.from_events(session.events) if session.meta.get("clock") == "live" else None


def replays_exactly(session: Session) -> bool:
    """Whether a replay can reproduce the recording's decisions exactly: it ran in
    lockstep, or live with its arrivals recorded (every duplex since they were added)."""
    return session.meta.get("clock") == "live" or was_lockstep(session)


def was_lockstep(session: Session) -> bool:
    """Whether the recording ran on the simulated clock (every decision on a frame edge).

    A live recording's decisions depend on how fast the machine computed; a replay on
    the simulated clock will not reproduce them exactly.
    """
    clock = session.meta.get("clock")
    if clock in ("simulated", "monotonic"):
        return clock == "simulated"
    ts = [e.t for e in session.events if e.DECISION]
    return all(abs(t / FRAME_S - round(t / FRAME_S)) < 1e-4 for t in ts)
