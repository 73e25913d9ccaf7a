"""A fake-stage harness (Pipecat's ``run_test`` idea): the real engine on scripted stages.

The real :class:`~duplex.engine.Engine`, :class:`~duplex.audio.player.Player`,
:class:`~duplex.reply.Reply` and :class:`~duplex.history.History` run; only the four
model stages are stand-ins, so an engine test reads as a timeline and runs in
milliseconds without weights::

    run = run_timeline([says("tell me about the moon", 0.0, 1.2)])
    assert run.first(AgentTurnStarted).t <= 1.2 + 0.6

How the stand-ins talk to each other: the user's speech is rendered into the microphone
signal, so every seam of the engine (mic filters, mute, the recorder's taps) sees real
frames. Utterance ``k`` of the script is a constant level ``SPEECH_LEVEL + k *
CODE_STEP``: :class:`FakeVAD` is an energy detector, :class:`FakeASR` decodes ``k`` from
the level and reveals the utterance's words in proportion to the frames it has heard.
:class:`FakeTTS` renders a never-repeating, never-zero signal (``WORD_S`` per word), so a
test can check that what the speaker played is exactly what was synthesised, sample
for sample. Each stand-in can be made slow (``delay_s``) to test what runs off the loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.source import ArraySource
from duplex.bus import EventBus
from duplex.config import Config, load_config
from duplex.engine import Engine, EngineStats
from duplex.events import AudioPlayed, Decision, Event
from duplex.stages.factory import Models
from duplex.turn import PolicyInput, PolicyOutput

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
SPEECH_LEVEL = 0.1
CODE_STEP = 0.002
VAD_LEVEL = 0.02
WORD_S = 0.2
"""Seconds of fake TTS audio per word."""
DEFAULT_REPLY = "Sure. The moon is about three hundred and eighty thousand kilometres away from us."


@dataclass(frozen=True, slots=True)
class Say:
    """The user speaks ``text`` from ``start`` to ``end`` (session seconds)."""

    text: str
    start: float
    end: float

    @property
    def frames(self) -> int:
        a, b = self._samples()
        return b // FRAME_SAMPLES - a // FRAME_SAMPLES + (1 if b % FRAME_SAMPLES else 0)

    def _samples(self) -> tuple[int, int]:
        return round(self.start * SAMPLE_RATE), round(self.end * SAMPLE_RATE)


def says(text: str, start: float, end: float) -> Say:
    assert end > start >= 0, f"bad span {start}-{end}"
    return Say(text, start, end)


def render(script: Sequence[Say], duration: float) -> np.ndarray:
    """The microphone signal of a script: utterance ``k`` is level ``SPEECH_LEVEL + k*CODE_STEP``."""
    audio = np.zeros(round(duration * SAMPLE_RATE), dtype=np.float32)
    for k, s in enumerate(script):
        a, b = s._samples()
        audio[a:b] = SPEECH_LEVEL + k * CODE_STEP
    return audio


def _code(frame: np.ndarray) -> int | None:
    peak = float(np.max(np.abs(frame)))
    if peak < VAD_LEVEL:
        return None
    return max(0, round((peak - SPEECH_LEVEL) / CODE_STEP))


# --- the stand-ins ----------------------------------------------------------------------


class FakeVAD:
    """An energy detector: speech where the frame's peak reaches ``VAD_LEVEL``."""

    def reset(self) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> float:
        return 1.0 if _code(frame) is not None else 0.0


class FakeASR:
    """Reveals the scripted words of the utterances it hears, in proportion to frames heard."""

    def __init__(self, script: Sequence[Say], finish_delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.finish_delay_s = finish_delay_s
        self.finishes = 0
        self._heard: dict[int, int] = {}

    def reset(self) -> None:
        self._heard = {}

    def start(self) -> None:
        self._heard = {}

    def accept(self, pcm: np.ndarray) -> None:
        k = _code(pcm)
        if k is not None and k < len(self.script):
            self._heard[k] = self._heard.get(k, 0) + 1

    def partial(self) -> str:
        out: list[str] = []
        for k in sorted(self._heard):
            ws = self.script[k].text.split()
            n = min(len(ws), math.floor(len(ws) * self._heard[k] / self.script[k].frames + 1e-9))
            out.extend(ws[:n])
        return " ".join(out)

    def finish(self) -> str:
        if self.finish_delay_s:
            time.sleep(self.finish_delay_s)
        self.finishes += 1
        return self.partial()


class FakeLLM:
    """Streams scripted replies word by word (the n-th call gets ``replies[n]``, the last repeats)."""

    def __init__(self, replies: Sequence[str] = (DEFAULT_REPLY,), token_delay_s: float = 0.0) -> None:
        self.replies = list(replies)
        self.token_delay_s = token_delay_s
        self.calls: list[list[dict[str, str]]] = []
        self.tokens_generated = 0

    def warmup(self) -> None:
        pass

    def stream(self, messages: Sequence[Mapping[str, str]], cancel: threading.Event) -> Iterator[str]:
        self.calls.append([dict(m) for m in messages])
        text = self.replies[min(len(self.calls), len(self.replies)) - 1]
        for i, w in enumerate(text.split()):
            if cancel.is_set():
                return
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            self.tokens_generated += 1
            yield w if i == 0 else " " + w


class FakeTTS:
    """``WORD_S`` seconds per word of a signal that never repeats and is never zero.

    ``rendered`` keeps every (text, audio) produced, in order.
    """

    def __init__(self, delay_s: float = 0.0, word_s: float = WORD_S) -> None:
        self.delay_s = delay_s
        self.word_s = word_s
        self.rendered: list[tuple[str, np.ndarray]] = []
        self._n = 0

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        if self.delay_s:
            time.sleep(self.delay_s)
        n = max(1, len(text.split())) * round(self.word_s * SAMPLE_RATE)
        idx = np.arange(self._n, self._n + n, dtype=np.float64)
        self._n += n
        audio = (0.1 + 0.2 * np.modf(idx * 0.6180339887)[0]).astype(np.float32)  # (n,) in [0.1, 0.3)
        self.rendered.append((text, audio))
        yield audio


class ScriptedPolicy:
    """A turn policy from a script: decisions at given times, else a simple silence rule.

    ``at`` maps a session time to a decision, returned once on the first frame at or after
    it; ``rule`` may decide any other frame; without either, the turn ends after
    ``eot_silence_s`` of silence. ``step_delay_s`` makes every step that slow (an ONNX
    model's cost). Every input is kept in ``inputs``.
    """

    name = "scripted"

    def __init__(
        self,
        at: Mapping[float, Decision] | None = None,
        rule: Callable[[PolicyInput], Decision | None] | None = None,
        eot_silence_s: float = 0.25,
        step_delay_s: float = 0.0,
    ) -> None:
        self.at = dict(at or {})
        self.rule = rule
        self.eot_silence_s = eot_silence_s
        self.step_delay_s = step_delay_s
        self.inputs: list[PolicyInput] = []
        self.threads: set[str] = set()
        self._due: list[tuple[float, Decision]] = []

    def reset(self) -> None:
        self.inputs = []
        self._due = sorted(self.at.items())

    def step(self, x: PolicyInput) -> PolicyOutput:
        self.threads.add(threading.current_thread().name)
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        self.inputs.append(x)
        if self._due and x.t + 1e-9 >= self._due[0][0]:
            return PolicyOutput(self._due.pop(0)[1])
        if self.rule is not None:
            d = self.rule(x)
            if d is not None:
                return PolicyOutput(d)
        if x.user_turn_open and not x.user_speaking and x.silence >= self.eot_silence_s:
            return PolicyOutput(Decision.END_OF_TURN)
        return PolicyOutput(Decision.CONTINUE if x.agent_speaking else Decision.HOLD)


class RecordingSink:
    """Keeps every chunk written to the speaker."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def write(self, chunk: np.ndarray) -> None:
        self.chunks.append(chunk.copy())

    def close(self) -> None:
        pass

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)


# --- building and running -----------------------------------------------------------------


def make_config(*overrides: dict[str, Any]) -> Config:
    """The default profile (rules policy) with nested-dict overrides."""
    return load_config(None, [{"policy": {"name": "rules"}}, *overrides])


BACKCHANNEL_CLIP_S = 0.4


def make_models(script: Sequence[Say], *, llm: FakeLLM | None = None, tts: FakeTTS | None = None,
                asr: FakeASR | None = None) -> Models:
    clip = np.full(round(BACKCHANNEL_CLIP_S * SAMPLE_RATE), 0.05, dtype=np.float32)
    return Models(FakeVAD(), asr or FakeASR(script), llm or FakeLLM(), tts or FakeTTS(), clip)


@dataclass
class Timeline:
    """What a run produced: the engine (its history, player), every event, the fakes."""

    engine: Engine
    stats: EngineStats
    events: list[Event]
    models: Models
    policy: Any
    sink: RecordingSink
    script: list[Say] = field(default_factory=list)

    def of(self, cls: type[Event], **match: Any) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())]

    def first(self, cls: type[Event], **match: Any) -> Any:
        found = self.of(cls, **match)
        assert found, f"no {cls.__name__} {match or ''} in {self.decisions()}"
        return found[0]

    def decisions(self) -> list[str]:
        return [f"{e.t:.3f} {e.type}" for e in self.events if e.DECISION]

    def voiced(self, turn: int) -> list[AudioPlayed]:
        return [e for e in self.of(AudioPlayed, turn=turn) if e.n_samples > 0]

    @property
    def fake_tts(self) -> FakeTTS:
        assert isinstance(self.models.tts, FakeTTS)
        return self.models.tts

    @property
    def fake_llm(self) -> FakeLLM:
        assert isinstance(self.models.llm, FakeLLM)
        return self.models.llm


async def arun_timeline(
    script: Sequence[Say],
    *,
    policy: Any = None,
    models: Models | None = None,
    cfg: Config | None = None,
    duration: float | None = None,
    realtime: bool = False,
    on_engine: Callable[[Engine], None] | None = None,
) -> Timeline:
    """Run the real engine on a scripted user; ``duration`` defaults to 1 s after the last word."""
    script = list(script)
    cfg = cfg or make_config()
    models = models or make_models(script)
    policy = policy if policy is not None else ScriptedPolicy()
    end = duration if duration is not None else (max((s.end for s in script), default=0.0) + 1.0)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    sink = RecordingSink()
    source = ArraySource(render(script, end), name="timeline", realtime=realtime)
    engine = Engine(cfg, models, policy, source, sink, bus=bus)
    if on_engine is not None:
        on_engine(engine)
    stats = await engine.run()
    return Timeline(engine, stats, events, models, policy, sink, script)


def run_timeline(script: Sequence[Say], **kw: Any) -> Timeline:
    """:func:`arun_timeline` in a fresh event loop."""
    return asyncio.run(arun_timeline(script, **kw))
