"""A simulated user: a script of utterances, rendered to audio offline, that reacts to
the agent on the session clock.

Script (TOML)::

    voice = "piper"            # piper (the packaged voice, pitch-shifted), or "espeak:en-us+f3"
    [[say]]
    text = "Hi! What's the tallest mountain in Europe?"
    at = 0.5                   # seconds from the start
    [[say]]
    text = "Wait, stop. What about in Africa?"
    after_agent_speech = 1.2   # when the agent has spoken 1.2 s of its current reply
    [[say]]
    text = "mm-hmm"
    after_agent_speech = 0.8
    [[say]]
    text = "I want to fly [pause 900] to Nairobi."
    after_agent_done = 0.7     # 0.7 s after the agent's reply ended
    [[say]]
    sound = "cough.wav"        # any audio file instead of text
    after_previous = 0.4       # 0.4 s after the previous utterance ended
    gain_db = -6

Utterances fire in order; each becomes eligible when the previous one has finished.
Every decision it makes is on the session clock, so a lockstep run is reproducible.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.source import pace
from duplex.audio.wav import read_audio, resample
from duplex.bus import EventBus
from duplex.errors import ScenarioError
from duplex.events import AgentTurnEnded, AudioPlayed, Event
from duplex.stages.tts import TTS

TRIGGERS = ("at", "after_agent_speech", "after_agent_done", "after_previous")
_PAUSE = re.compile(r"\[pause\s+(\d+)\s*(?:ms)?\]")


@dataclass(frozen=True)
class Utterance:
    text: str
    trigger: str
    value: float
    sound: str = ""
    gain_db: float = 0.0


def parse_script(data: dict[str, object], where: str = "script") -> tuple[str, list[Utterance]]:
    voice = data.get("voice", "piper")
    if not isinstance(voice, str):
        raise ScenarioError(f"{where}: voice must be a string")
    says = data.get("say", [])
    if not isinstance(says, list) or not says:
        raise ScenarioError(f"{where}: needs at least one [[say]] entry")
    out: list[Utterance] = []
    for k, item in enumerate(says, 1):
        if not isinstance(item, dict):
            raise ScenarioError(f"{where}: say #{k} must be a table")
        unknown = set(item) - {"text", "sound", "gain_db", *TRIGGERS}
        if unknown:
            raise ScenarioError(f"{where}: say #{k}: unknown key(s) {', '.join(sorted(unknown))}")
        trig = [t for t in TRIGGERS if t in item]
        if len(trig) != 1:
            raise ScenarioError(f"{where}: say #{k} needs exactly one of {', '.join(TRIGGERS)}")
        value = item[trig[0]]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ScenarioError(f"{where}: say #{k}: {trig[0]} must be a non-negative number")
        text, sound = item.get("text", ""), item.get("sound", "")
        if not isinstance(text, str) or not isinstance(sound, str) or bool(text) == bool(sound):
            raise ScenarioError(f"{where}: say #{k} needs either text or sound (a string)")
        gain = item.get("gain_db", 0.0)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)):
            raise ScenarioError(f"{where}: say #{k}: gain_db must be a number")
        out.append(Utterance(text, trig[0], float(value), sound, float(gain)))
    return voice, out


def load_script(path: str | Path) -> tuple[str, list[Utterance]]:
    p = Path(path)
    if not p.exists():
        raise ScenarioError(f"script not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from exc
    return parse_script(data, str(p))


class UserVoice:
    """Renders the simulated user's lines: piper (pitch-shifted so it is not the agent's
    voice) or espeak-ng when installed."""

    def __init__(self, spec: str, tts: TTS | None) -> None:
        self.spec = spec
        self.tts = tts
        if spec.startswith("espeak:"):
            if shutil.which("espeak-ng") is None:
                raise ScenarioError("voice 'espeak:...' needs espeak-ng (apt-get install espeak-ng)")
        elif spec != "piper":
            raise ScenarioError(f"unknown user voice {spec!r} (piper or espeak:VOICE)")
        elif tts is None:
            raise ScenarioError("the piper user voice needs a TTS")

    def render(self, text: str) -> np.ndarray:
        parts: list[np.ndarray] = []
        pos = 0
        for m in _PAUSE.finditer(text):
            parts.append(self._speak(text[pos : m.start()]))
            parts.append(np.zeros(int(SAMPLE_RATE * int(m.group(1)) / 1000), dtype=np.float32))
            pos = m.end()
        parts.append(self._speak(text[pos:]))
        return np.concatenate([p for p in parts if p.size] or [np.zeros(0, np.float32)])

    def _speak(self, text: str) -> np.ndarray:
        text = text.strip()
        if not text:
            return np.zeros(0, dtype=np.float32)
        if self.spec.startswith("espeak:"):
            with tempfile.TemporaryDirectory() as d:
                out = Path(d) / "u.wav"
                subprocess.run(["espeak-ng", "-v", self.spec[7:], "-w", str(out), text], check=True, capture_output=True)
                audio = read_audio(out)
        else:
            assert self.tts is not None
            audio = np.concatenate(list(self.tts.synthesize(text)) or [np.zeros(0, np.float32)])
            # Up ~3 semitones: play 19 % faster (resample down), which also raises pitch.
            audio = resample(audio, 19, 16)
        return _trim(audio)


def _trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    idx = np.flatnonzero(np.abs(audio) > threshold)
    if idx.size == 0:
        return audio[:0]
    return audio[max(0, idx[0] - 160) : idx[-1] + 800].astype(np.float32)


class SimulatedUser:
    """An audio source that speaks its script in reaction to the agent's events."""

    live = False
    name = "simulated user"

    def __init__(self, utterances: list[Utterance], voice: UserVoice, *, base_dir: Path | None = None,
                 tail_s: float = 1.0, realtime: bool = False, max_wait_s: float = 30.0) -> None:
        self.utterances = utterances
        self.max_wait_s = max_wait_s
        self.realtime = realtime
        self.tail_frames = int(tail_s * SAMPLE_RATE / FRAME_SAMPLES)
        self.clips: list[np.ndarray] = []
        for u in utterances:
            clip = read_audio((base_dir or Path(".")) / u.sound) if u.sound else voice.render(u.text)
            self.clips.append(clip * (10 ** (u.gain_db / 20)))
        self.log: list[tuple[float, str]] = []
        """(session time the utterance started, its text): for scenario checks."""
        self._agent_spoken = 0.0
        self._agent_turn_active = False
        self._agent_done_t: float | None = None

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(self._on_event)

    def _on_event(self, ev: Event) -> None:
        match ev:
            case AudioPlayed() if ev.turn >= 0 and ev.n_samples:
                if not self._agent_turn_active:
                    self._agent_turn_active = True
                    self._agent_spoken = 0.0
                self._agent_spoken += ev.n_samples / SAMPLE_RATE
            case AgentTurnEnded():
                self._agent_turn_active = False
                self._agent_done_t = ev.t
            case _:
                pass

    async def frames(self) -> AsyncIterator[np.ndarray]:
        import asyncio

        t0 = asyncio.get_running_loop().time()
        i = 0
        k = 0
        current: np.ndarray | None = None
        pos = 0
        prev_end = 0.0
        idle_after_last = 0
        waited = 0
        while True:
            t = i * FRAME_SAMPLES / SAMPLE_RATE
            if current is None and k < len(self.utterances):
                u = self.utterances[k]
                fire = False
                if u.trigger == "at":
                    fire = t >= u.value
                elif u.trigger == "after_previous":
                    fire = t >= prev_end + u.value
                elif u.trigger == "after_agent_speech":
                    fire = self._agent_turn_active and self._agent_spoken >= u.value
                elif u.trigger == "after_agent_done":
                    done = self._agent_done_t
                    fire = done is not None and done >= prev_end and t >= done + u.value
                if fire:
                    current, pos = self.clips[k], 0
                    self.log.append((t, u.text or u.sound))
                    k += 1
            frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            if current is not None:
                n = min(FRAME_SAMPLES, len(current) - pos)
                frame[:n] = current[pos : pos + n]
                pos += n
                if pos >= len(current):
                    current = None
                    prev_end = t + n / SAMPLE_RATE
            if self.realtime:
                await pace(i, t0)
            yield frame
            i += 1
            if k >= len(self.utterances) and current is None:
                idle_after_last += 1
                if idle_after_last >= self.tail_frames:
                    return
            waited = 0 if current is not None else waited + 1
            if waited * FRAME_SAMPLES / SAMPLE_RATE > self.max_wait_s:
                return  # the agent never did what the next line waits for