"""Wiring: models + engine + recorder + console output (+ MQTT) for one conversation.

The commands, the TUI, replay, scenarios and the benchmarks all build conversations
through here. The turn policy comes from ``models.make_policy`` (injected by whoever
loaded the models): this module, like the engine, never imports ``policies``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from duplex.audio.sink import AudioSink, NullSink
from duplex.audio.source import AudioSource, WavSource
from duplex.bus import EventBus
from duplex.config import Config
from duplex.engine import Engine, EngineStats
from duplex.errors import ConfigError, DuplexError
from duplex.events import (
    AgentTurnEnded,
    ASRFinal,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    Notice,
    OverlapIgnored,
    StageError,
    TurnLatency,
)
from duplex.session.recorder import Recorder, Recording, as_recorded
from duplex.stages.factory import Models

log = logging.getLogger(__name__)


def new_session_dir(root: str | Path, label: str = "run") -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{label}"
    p, k = base, 1
    while p.exists():
        k += 1
        p = Path(f"{base}-{k}")
    return p


def make_source(input_wav: str | None, simulate: str | None, models: Models | None, realtime: bool) -> AudioSource:
    if input_wav and simulate:
        raise ConfigError("give either --input or --simulate, not both")
    if input_wav:
        return WavSource(input_wav, realtime=realtime)
    if simulate:
        from duplex.simuser import SimulatedUser, UserVoice, load_script

        voice, utts = load_script(simulate)
        return SimulatedUser(utts, UserVoice(voice, models.tts if models else None),
                             base_dir=Path(simulate).parent, realtime=realtime)
    raise ConfigError("give --input USER.wav or --simulate SCRIPT.toml")


def make_capture_aec(cfg: Config, source: AudioSource, bus: EventBus) -> Any:
    """The echo canceller for this conversation, or None.

    ``auto`` cancels echo where there is an acoustic path: a live microphone next to a
    speaker. Files and scripted users carry no echo of this run's agent, so ``auto``
    leaves them alone; naming a backend forces it on.
    """
    if cfg.aec.mode == "off" or (cfg.aec.mode == "auto" and not source.live):
        return None
    from duplex.audio.aec import make_aec

    return make_aec(cfg.aec, notice=lambda msg: bus.publish(Notice(0.0, message=msg)))


class ConsolePrinter:
    """Prints each turn's transcript and latency breakdown as it happens."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, ev: Event) -> None:
        w = self.out.write
        match ev:
            case ASRFinal() if ev.text:
                w(f"[{ev.t:7.2f}] user     : {ev.text}\n")
            case EndOfTurn():
                w(f"[{ev.t:7.2f}]   end of turn ({ev.delay * 1000:.0f} ms after speech)\n")
            case BargeIn():
                w(f"[{ev.t:7.2f}]   BARGE-IN  reaction {ev.reaction * 1000:.0f} ms ({ev.text!r})\n")
            case Backchannel():
                w(f"[{ev.t:7.2f}]   backchannel ({ev.who}) {ev.text!r}\n")
            case OverlapIgnored():
                w(f"[{ev.t:7.2f}]   overlap ignored ({ev.duration * 1000:.0f} ms)\n")
            case AgentTurnEnded():
                if ev.interrupted:
                    w(f"[{ev.t:7.2f}] agent    : {ev.heard}  [cut; never heard: "
                      f"{_unheard(ev.generated, ev.heard)!r}]\n")
                else:
                    w(f"[{ev.t:7.2f}] agent    : {ev.heard or ev.generated}\n")
            case TurnLatency():
                w(f"[{ev.t:7.2f}]   latency  : {format_latency(ev)}\n")
            case StageError():
                w(f"[{ev.t:7.2f}]   error in {ev.stage}: {ev.message}\n")
            case Notice():
                w(f"[{ev.t:7.2f}]   note: {ev.message}\n")
            case _:
                return
        self.out.flush()


def _unheard(generated: str, heard: str) -> str:
    g = generated.split()
    return " ".join(g[len(heard.split()):])


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def format_latency(ev: TurnLatency) -> str:
    return (f"voice-to-voice {_ms(ev.voice_to_voice)} ms = end-of-turn {_ms(ev.end_of_turn)} + "
            f"LLM first token {_ms(ev.llm_first_token)} + TTS first audio {_ms(ev.tts_first_audio)} "
            f"(ASR final {_ms(ev.asr_final)})")


@dataclass
class RunResult:
    stats: EngineStats
    session_dir: Path | None
    events: list[Event] = field(default_factory=list)


async def run_conversation(
    cfg: Config,
    models: Models,
    source: AudioSource,
    *,
    session_dir: Path | None = None,
    sink: AudioSink | None = None,
    subscribers: list[Callable[[Event], None]] = (),  # type: ignore[assignment]
    bus: EventBus | None = None,
    keep_events: bool = True,
    on_engine: Callable[[Engine], Any] | None = None,
    on_bridge: Callable[[Any], Any] | None = None,
    recording: Recording | None = None,
) -> RunResult:
    """Run one conversation to its end, recording it into ``session_dir`` if given.

    ``recording`` is a recorder the caller opened and will close (the TUI's pausable
    one); it is wired exactly like the one ``session_dir`` opens here.
    """
    if session_dir is not None and recording is not None:
        raise ValueError("run_conversation: give session_dir or recording, not both")
    if models.make_policy is None:
        raise ConfigError("run_conversation needs models loaded with a policy factory (load_models(cfg, make_policy))")
    bus = bus or EventBus()
    events: list[Event] = []
    if keep_events:
        bus.subscribe(events.append)
    for s in subscribers:
        bus.subscribe(s)
    engine = Engine(cfg, models, models.make_policy(cfg.policy), source, sink or NullSink(), bus=bus,
                    aec=make_capture_aec(cfg, source, bus), policy_factory=models.make_policy)
    attach = getattr(source, "attach", None)
    if attach is not None:
        attach(bus)
    recorder: Recorder | None = None
    if session_dir is not None:
        recorder = recording = Recorder(session_dir, cfg, source=getattr(source, "name", ""))
    if recording is not None:
        bus.subscribe(recording.on_event)
        engine.add_tap(recording.on_audio)
    mqtt_cm: Any = contextlib.nullcontext()
    if cfg.mqtt.enabled:
        from duplex.mqtt import MQTTBridge  # type: ignore[attr-defined]

        mqtt_cm = MQTTBridge(cfg.mqtt, session_id=(session_dir.name if session_dir else "live"), control=engine)
    try:
        async with mqtt_cm as bridge:
            if bridge is not None:
                bus.subscribe(bridge.on_event)
                if on_bridge is not None:
                    on_bridge(bridge)
            if on_engine is not None:
                on_engine(engine)
            if recording is not None:
                # Last filter: the listener hears bit for bit what mic.wav will hold, so a
                # replay of this session reproduces its decisions.
                engine.add_mic_filter(as_recorded)
            stats = await engine.run()
    finally:
        if recorder is not None:
            recorder.close(summary={"turns": engine.stats.turns, "barge_ins": engine.stats.barge_ins,
                                    "backchannels": engine.stats.backchannels})
        close = getattr(sink, "close", None)
        if close is not None:
            close()
    return RunResult(stats, session_dir, events)
