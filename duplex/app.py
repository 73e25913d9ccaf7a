"""Wiring: models + engine + recorder + console output (+ MQTT) for one conversation.

The commands, the TUI, replay, scenarios and the benchmarks all build conversations
through here. The turn policy comes from ``models.make_policy`` (injected by whoever
loaded the models): this module, like the engine, never imports ``policies``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from duplex.audio.sink import AudioSink, NullSink
from duplex.audio.source import AudioSource, WavSource
from duplex.bus import EventBus
from duplex.config import Config
from duplex.engine import Engine, EngineStats
from duplex.errors import ConfigError
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
from duplex.stages.asr import GuardedASR
from duplex.stages.factory import Models
from duplex.stages.speaker import gate_record

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
    stopped_by: str | None = None
    """The signal that stopped the conversation (``"SIGINT"``, ``"SIGTERM"``), or None."""
    incomplete: str | None = None
    """Why the session in ``session_dir`` is incomplete (a write failed: ``session.json``
    says ``complete: false``), or None when it was written whole."""


STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a conversation cleanly (the commands pass these)."""
STOP_GRACE_S = 5.0
"""How long the engine has to end after the first stop signal before its task is cancelled."""


class SignalStop:
    """SIGINT and SIGTERM end a conversation alike, as if its input had ended.

    The first signal asks the engine to end (:meth:`Engine.end`): it stops after the frame
    in hand and the recorder closes every file as on a normal end. A second signal, or
    the engine still running :data:`STOP_GRACE_S` later, cancels the conversation's task;
    the recorder still closes (``run_conversation``'s ``finally``). The handlers are
    installed with ``loop.add_signal_handler``, so they run on the loop between two
    callbacks, never in the middle of a write. Off the main thread (where Python cannot
    handle signals) nothing is installed.
    """

    def __init__(self, signals: Sequence[signal.Signals], grace_s: float = STOP_GRACE_S) -> None:
        self.signals = tuple(signals)
        self.grace_s = grace_s
        self.stopped_by: str | None = None
        self.forced = False
        self._engine: Engine | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Take the signals over for the conversation running in the current task."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in self.signals:
            previous = signal.getsignal(sig)
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (ValueError, RuntimeError) as exc:  # not the main thread
                log.debug("not handling %s: %s", sig.name, exc)
                continue
            self._previous[sig] = previous

    def uninstall(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        if self._timer is not None:
            self._timer.cancel()
        for sig, previous in self._previous.items():
            assert self._loop is not None
            self._loop.remove_signal_handler(sig)
            # remove_signal_handler leaves SIG_DFL (SIGINT: default_int_handler); restore ours.
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def bind(self, engine: Engine) -> None:
        """The engine to end; a signal that came before it existed ends it now."""
        self._engine = engine
        if self.stopped_by is not None:
            engine.end(f"stopped by {self.stopped_by}")

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopped_by is not None:
            self._force()
            return
        self.stopped_by = signal.Signals(sig).name
        log.info("%s: ending the conversation", self.stopped_by)
        if self._engine is not None:
            self._engine.end(f"stopped by {self.stopped_by}")
        assert self._loop is not None
        self._timer = self._loop.call_later(self.grace_s, self._force)

    def _force(self) -> None:
        if self._task is not None and not self._task.done() and not self.forced:
            log.warning("%s: the conversation did not end by itself; cancelling it", self.stopped_by)
            self.forced = True
            self._task.cancel()


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
    stop_signals: Sequence[signal.Signals] = (),
) -> RunResult:
    """Run one conversation to its end, recording it into ``session_dir`` if given.

    ``recording`` is a recorder the caller opened and will close (the TUI's pausable
    one); it is wired exactly like the one ``session_dir`` opens here.

    ``stop_signals`` (the commands pass :data:`STOP_SIGNALS`) end the conversation
    cleanly (:class:`SignalStop`); the result's ``stopped_by`` names the signal.
    The result's ``incomplete`` says why the session recorded here is incomplete.
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
    failures: dict[str, int] = {}
    """StageErrors by stage, for the session's summary: what failed, at a glance."""

    def count_failure(ev: Event) -> None:
        if isinstance(ev, StageError):
            failures[ev.stage] = failures.get(ev.stage, 0) + 1

    bus.subscribe(count_failure)
    loop = asyncio.get_running_loop()

    def asr_failed(message: str) -> None:  # the listener's thread: publish on the loop
        loop.call_soon_threadsafe(lambda: bus.publish(StageError(engine.clock.now(), stage="asr", message=message)))

    # A recogniser that raises costs one utterance (no reply to it), not the conversation.
    models = replace(models, asr=GuardedASR(models.asr, asr_failed))
    engine = Engine(cfg, models, models.make_policy(cfg.policy), source, sink or NullSink(), bus=bus,
                    aec=make_capture_aec(cfg, source, bus), policy_factory=models.make_policy)
    attach = getattr(source, "attach", None)
    if attach is not None:
        attach(bus)
    recorder: Recorder | None = None
    if session_dir is not None:
        gate = engine.speaker.gate if engine.speaker is not None else None
        recorder = recording = Recorder(session_dir, cfg, source=getattr(source, "name", ""),
                                        extra={"speaker_gate": gate_record(gate)})
    if recording is not None:
        bus.subscribe(recording.on_event)
        engine.add_tap(recording.on_audio)
        if not engine.lockstep:
            # Frame-clocked like lockstep, but models were not waited for: replays follow
            # the recorded arrivals (duplex.pacing).
            recording.annotate("clock", "live")
    stop = SignalStop(stop_signals) if stop_signals else None
    mqtt_cm: Any = contextlib.nullcontext()
    if cfg.mqtt.enabled:
        from duplex.mqtt import MQTTBridge  # type: ignore[attr-defined]

        mqtt_cm = MQTTBridge(cfg.mqtt, session_id=(session_dir.name if session_dir else "live"), control=engine)
    try:
        if stop is not None:
            stop.install()
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
            if stop is not None:
                stop.bind(engine)
            stats = await engine.run()
    except asyncio.CancelledError:
        if stop is None or not stop.forced:
            raise
        # We cancelled ourselves (a second signal, or the engine did not end in time):
        # the run is over, not cancelled from outside.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        stats = engine.stats
    finally:
        if recorder is not None:
            summary: dict[str, Any] = {"turns": engine.stats.turns, "barge_ins": engine.stats.barge_ins,
                                       "backchannels": engine.stats.backchannels}
            if failures:
                summary["stage_errors"] = dict(sorted(failures.items()))
            recorder.close(summary=summary)
        close = getattr(sink, "close", None)
        if close is not None:
            close()
        if stop is not None:
            # Last: a signal while the files close only marks the loop, it cannot cut the close.
            stop.uninstall()
    return RunResult(stats, session_dir, events, stopped_by=stop.stopped_by if stop is not None else None,
                     incomplete=recorder.failed if recorder is not None else None)
