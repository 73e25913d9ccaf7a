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
    after_agent_sentence = 2   # 0.5 s into the agent's second sentence
    offset = 0.5
    [[say]]
    text = "I want to fly [pause 900] to Nairobi."
    after_agent_done = 0.7     # 0.7 s after the agent's reply ended
    [[say]]
    sound = "cough.wav"        # any audio file instead of text ...
    clip = [1.2, 2.0]          # ... or a slice of one (seconds), e.g. a recorded mic.wav
    after_previous = 0.4       # 0.4 s after the previous utterance ended
    gain_db = -6
    [[say]]
    noise = "cough"            # a built-in synthetic sound: cough, knock, clap, static
    with_agent_start = 0.2     # 0.2 s after the agent's next reply starts playing

Triggers (exactly one per line):

* ``at``: seconds from the start of the session.
* ``after_previous``: seconds after the previous line ended.
* ``after_agent_speech``: the agent has spoken this many seconds of its current reply.
* ``after_agent_sentence``: the agent has reached this sentence (1 = the first) of its
  current reply and spoken ``offset`` seconds of it.
* ``with_agent_start``: this many seconds after the agent's next reply began playing
  (0 is "both start at once"; the user hears the agent one 32 ms frame later).
* ``after_end_of_turn``: this many seconds after the agent decided the user's turn was
  over (0 makes the user resume exactly as the agent starts to answer).
* ``after_agent_done``: this many seconds after the agent's reply ended.

Utterances fire in order; each becomes eligible when the previous one has finished.
Every decision it makes is on the session clock, so a lockstep run is reproducible.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.source import pace
from duplex.audio.wav import read_audio, resample
from duplex.bus import EventBus
from duplex.config import read_toml
from duplex.errors import AudioError, ScenarioError
from duplex.events import AgentTurnEnded, AudioPlayed, EndOfTurn, Event
from duplex.stages.tts import TTS

TRIGGERS = ("at", "after_agent_speech", "after_agent_done", "after_previous",
            "after_agent_sentence", "with_agent_start", "after_end_of_turn")
SOURCES = ("text", "sound", "noise")
NOISES = ("cough", "knock", "clap", "static")
_KEYS = frozenset({*SOURCES, *TRIGGERS, "gain_db", "offset", "clip"})
_PAUSE = re.compile(r"\[pause\s+(\d+)\s*(?:ms)?\]")
MAX_TIME_S = 24 * 3600.0
"""The latest a line may be scheduled, and the longest wait or clip a script may name."""
MAX_PAUSE_MS = 600_000
"""The longest ``[pause N]`` in a line (10 minutes of silence)."""
MAX_TEXT_CHARS = 10_000
MAX_SENTENCE = 1_000
GAIN_DB = (-120.0, 40.0)
"""Gains outside this are silence or a clipped square wave: a typo, not a test."""
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_RENDER_CACHE: dict[tuple[str, str, str], np.ndarray] = {}
_RENDER_CACHE_MAX = 256


@dataclass(frozen=True)
class Utterance:
    """One scripted line: what is heard (text, a sound file or a built-in noise) and when."""

    text: str
    trigger: str
    value: float
    sound: str = ""
    gain_db: float = 0.0
    noise: str = ""
    offset: float = 0.0
    """``after_agent_sentence`` only: seconds into that sentence."""
    clip: tuple[float, float] | None = None
    """``sound`` only: the slice of the file to play, in seconds."""

    @property
    def label(self) -> str:
        return self.text or (f"<{self.noise}>" if self.noise else f"<{Path(self.sound).name}>")


@dataclass
class Span:
    """When a line was heard on the session clock (``end`` is None if the session ended first)."""

    index: int
    start: float
    end: float | None
    label: str


def key_list(keys: Iterable[object]) -> str:
    """Keys for a one-line message: plain names as they are, anything odd quoted (a TOML
    key may hold a newline)."""
    return ", ".join(k if re.fullmatch(r"[\w.-]+", k) else repr(k) for k in sorted(map(str, keys)))


def number(value: object, where: str, key: str, *, integer: bool = False, lo: float = 0.0,
           hi: float = MAX_TIME_S) -> float:
    """A script or scenario number, validated: ``ScenarioError`` naming ``where`` and ``key``.

    Finite and in ``lo``..``hi``; with ``integer``, a whole number from 1 to ``hi``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}: {key} must be a number, got {value!r}")
    if integer and (not isinstance(value, int) or not 1 <= value <= hi):
        raise ScenarioError(f"{where}: {key} must be a whole number in 1..{hi:g}, got {value!r}")
    # Compared as given: a huge TOML integer does not fit a float, and nan compares false.
    if not (lo <= value <= hi) or (isinstance(value, float) and not math.isfinite(value)):
        raise ScenarioError(f"{where}: {key} must be a number in {lo:g}..{hi:g}, got {value!r}")
    return float(value)


def parse_utterance(item: object, where: str, extra_keys: Iterable[str] = ()) -> Utterance:
    """Validate one ``[[say]]`` table (``extra_keys`` are allowed and ignored here)."""
    if not isinstance(item, dict):
        raise ScenarioError(f"{where} must be a table")
    unknown = set(item) - _KEYS - set(extra_keys)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {key_list(unknown)}")
    trig = [t for t in TRIGGERS if t in item]
    if len(trig) != 1:
        raise ScenarioError(f"{where} needs exactly one of {', '.join(TRIGGERS)}")
    sentence = trig[0] == "after_agent_sentence"
    value = number(item[trig[0]], where, trig[0], integer=sentence, hi=MAX_SENTENCE if sentence else MAX_TIME_S)
    given = [s for s in SOURCES if s in item]
    if len(given) != 1:
        raise ScenarioError(f"{where} needs exactly one of text, sound or noise")
    src = item[given[0]]
    if not isinstance(src, str) or not src.strip():
        raise ScenarioError(f"{where}: {given[0]} must be a non-empty string")
    if given[0] == "noise" and src not in NOISES:
        raise ScenarioError(f"{where}: unknown noise {src!r} (known: {', '.join(NOISES)})")
    if given[0] == "text":
        if len(src) > MAX_TEXT_CHARS:
            raise ScenarioError(f"{where}: text is {len(src)} characters; the limit is {MAX_TEXT_CHARS}")
        for m in _PAUSE.finditer(src):
            if int(m.group(1)) > MAX_PAUSE_MS:
                raise ScenarioError(f"{where}: {m.group(0)} is longer than the {MAX_PAUSE_MS} ms a pause may last")
    if given[0] == "sound" and "\0" in src:
        raise ScenarioError(f"{where}: sound must be a file path, got {src!r}")
    gain = number(item.get("gain_db", 0.0), where, "gain_db", lo=GAIN_DB[0], hi=GAIN_DB[1])
    offset = 0.0
    if "offset" in item:
        if trig[0] != "after_agent_sentence":
            raise ScenarioError(f"{where}: offset goes with after_agent_sentence only")
        offset = number(item["offset"], where, "offset")
    clip: tuple[float, float] | None = None
    if "clip" in item:
        c = item["clip"]
        if given[0] != "sound":
            raise ScenarioError(f"{where}: clip goes with sound only")
        if not isinstance(c, list) or len(c) != 2:
            raise ScenarioError(f"{where}: clip must be [start_s, end_s]")
        a, b = (number(x, where, "clip") for x in c)
        if b <= a:
            raise ScenarioError(f"{where}: clip end {b} must be after its start {a}")
        clip = (a, b)
    return Utterance(
        text=src if given[0] == "text" else "",
        trigger=trig[0],
        value=value,
        sound=src if given[0] == "sound" else "",
        gain_db=gain,
        noise=src if given[0] == "noise" else "",
        offset=offset,
        clip=clip,
    )


def parse_script(data: dict[str, object], where: str = "script",
                 extra_keys: Iterable[str] = ()) -> tuple[str, list[Utterance]]:
    """Validate a script (already parsed from TOML); returns (voice, utterances).

    Raises:
        ScenarioError: naming the file, the line (``say #k``) and the key at fault.
    """
    unknown = set(data) - {"voice", "say"}
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {key_list(unknown)} (a script has voice and [[say]])")
    voice = check_voice(data.get("voice", "piper"), where)
    says = data.get("say", [])
    if not isinstance(says, list) or not says:
        raise ScenarioError(f"{where}: needs at least one [[say]] entry")
    extra = tuple(extra_keys)
    return voice, [parse_utterance(item, f"{where}: say #{k}", extra) for k, item in enumerate(says, 1)]


def check_voice(voice: object, where: str) -> str:
    """A user voice spec, ``piper`` or ``espeak:VOICE``, checked without loading anything."""
    if not isinstance(voice, str):
        raise ScenarioError(f"{where}: voice must be a string")
    if voice != "piper" and not (voice.startswith("espeak:") and len(voice) > 7 and "\0" not in voice):
        raise ScenarioError(f"{where}: unknown user voice {voice!r} (piper or espeak:VOICE)")
    return voice


def load_script(path: str | Path) -> tuple[str, list[Utterance]]:
    """Read and validate a script, its sound files included (everything but the voice's
    rendering), so a bad script fails before any model loads."""
    p = Path(path)
    voice, utts = parse_script(read_toml(p, "script", ScenarioError), str(p))
    check_sounds(utts, p.parent, str(p))
    return voice, utts


def check_sounds(utts: Iterable[Utterance], base_dir: Path, where: str) -> None:
    """Every ``sound`` line's file readable and its ``clip`` inside it (ScenarioError otherwise)."""
    for k, u in enumerate(utts, 1):
        if u.sound:
            try:
                sound_clip(u, base_dir)
            except ScenarioError as exc:
                raise ScenarioError(f"{where}: say #{k}: {exc}") from None


class UserVoice:
    """Renders the simulated user's lines: piper (pitch-shifted so it is not the agent's
    voice) or espeak-ng when installed. Renders are cached per process (text, voice)."""

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
        self._key = spec if tts is None else f"{spec}|{getattr(tts, 'voice_path', getattr(tts, 'name', ''))}"

    def render(self, text: str) -> np.ndarray:
        key = (self._key, text, "")
        hit = _RENDER_CACHE.get(key)
        if hit is not None:
            return hit
        parts: list[np.ndarray] = []
        pos = 0
        for m in _PAUSE.finditer(text):
            parts.append(self._speak(text[pos : m.start()]))
            parts.append(np.zeros(int(SAMPLE_RATE * int(m.group(1)) / 1000), dtype=np.float32))
            pos = m.end()
        parts.append(self._speak(text[pos:]))
        audio = np.concatenate([p for p in parts if p.size] or [np.zeros(0, np.float32)])
        if len(_RENDER_CACHE) >= _RENDER_CACHE_MAX:
            _RENDER_CACHE.pop(next(iter(_RENDER_CACHE)))
        _RENDER_CACHE[key] = audio
        return audio

    def _speak(self, text: str) -> np.ndarray:
        text = text.strip()
        if not text:
            return np.zeros(0, dtype=np.float32)
        if self.spec.startswith("espeak:"):
            with tempfile.TemporaryDirectory() as d:
                out = Path(d) / "u.wav"
                try:
                    subprocess.run(["espeak-ng", "-v", self.spec[7:], "-w", str(out), text],
                                   check=True, capture_output=True)
                except subprocess.CalledProcessError as exc:
                    msg = exc.stderr.decode(errors="replace").strip() or f"exit {exc.returncode}"
                    raise ScenarioError(f"espeak-ng failed for voice {self.spec[7:]!r}: {msg}") from exc
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


def synth_noise(name: str) -> np.ndarray:
    """A built-in non-speech sound, the same samples on every call (seeded by its name)."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(zlib.crc32(name.encode()))
    sr = SAMPLE_RATE

    def burst(ms: float, lo: float, hi: float, tau_ms: float, peak: float) -> np.ndarray:
        n = int(sr * ms / 1000)
        sos = butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
        x = sosfilt(sos, rng.standard_normal(n))
        t = np.arange(n) / sr
        env = np.minimum(1.0, t / 0.008) * np.exp(-t / (tau_ms / 1000))
        y = x * env
        return (peak * y / (np.max(np.abs(y)) + 1e-9)).astype(np.float32)

    def gap(ms: float) -> np.ndarray:
        return np.zeros(int(sr * ms / 1000), dtype=np.float32)

    if name == "cough":  # two throat bursts: broadband, energy around 0.3-3 kHz
        parts = [burst(260, 250, 3000, 90, 0.35), gap(140), burst(200, 250, 3000, 70, 0.25)]
    elif name == "knock":  # three knuckle raps on a door
        parts = []
        for _ in range(3):
            parts += [burst(70, 80, 900, 15, 0.4), gap(160)]
    elif name == "clap":
        parts = [burst(60, 500, 6000, 12, 0.5)]
    elif name == "static":  # a short burst of broadband hiss
        parts = [(0.05 * rng.standard_normal(int(sr * 0.4))).astype(np.float32)]
    else:
        raise ScenarioError(f"unknown noise {name!r} (known: {', '.join(NOISES)})")
    return np.concatenate(parts).astype(np.float32)


def sound_clip(u: Utterance, base_dir: Path) -> np.ndarray:
    """A ``sound`` line's audio (its ``clip`` of the file, if any), 16 kHz mono."""
    path = base_dir / u.sound
    try:
        clip = read_audio(path)
    except AudioError as exc:
        raise ScenarioError(f"sound for line {u.label}: {exc}") from exc
    if u.clip is not None:
        a, b = (int(round(s * SAMPLE_RATE)) for s in u.clip)
        if a >= len(clip):
            raise ScenarioError(f"clip {list(u.clip)} starts after the end of {path} ({len(clip) / SAMPLE_RATE:.2f} s)")
        clip = clip[a:b]
    return clip


def render_utterance(u: Utterance, voice: UserVoice, base_dir: Path) -> np.ndarray:
    """The audio of one line, gain applied."""
    if u.noise:
        clip = synth_noise(u.noise)
    elif u.sound:
        clip = sound_clip(u, base_dir)
    else:
        clip = voice.render(u.text)
    return (clip * (10 ** (u.gain_db / 20))).astype(np.float32)


class SimulatedUser:
    """An audio source that speaks its script in reaction to the agent's events."""

    live = False
    finite = True
    name = "simulated user"

    def __init__(self, utterances: list[Utterance], voice: UserVoice, *, base_dir: Path | None = None,
                 tail_s: float = 1.0, realtime: bool = False, max_wait_s: float = 30.0) -> None:
        self.utterances = utterances
        self.max_wait_s = max_wait_s
        self.realtime = realtime
        number(tail_s, "simulated user", "tail_s")
        number(max_wait_s, "simulated user", "max_wait_s")
        self.tail_frames = int(tail_s * SAMPLE_RATE / FRAME_SAMPLES)
        self.clips: list[np.ndarray] = [render_utterance(u, voice, base_dir or Path(".")) for u in utterances]
        self.log: list[tuple[float, str]] = []
        """(session time the utterance started, its text): for scenario checks."""
        self.spans: list[Span] = []
        """When each line that fired was heard (start and end on the session clock)."""
        self._turn: int | None = None
        self._agent_spoken = 0.0
        self._sentence = 1
        self._sentence_starts: dict[int, float] = {1: 0.0}
        self._agent_turn_active = False
        self._agent_start_t: float | None = None
        self._agent_done_t: float | None = None
        self._eot_t: float | None = None

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(self._on_event)

    def _on_event(self, ev: Event) -> None:
        match ev:
            case AudioPlayed() if ev.turn >= 0 and ev.n_samples:
                if not self._agent_turn_active or ev.turn != self._turn:
                    self._turn = ev.turn
                    self._agent_turn_active = True
                    self._agent_spoken = 0.0
                    self._sentence = 1
                    self._sentence_starts = {1: 0.0}
                    self._agent_start_t = ev.t
                self._agent_spoken += ev.n_samples / SAMPLE_RATE
                for word in ev.text.split():
                    if _SENTENCE_END.search(word):
                        self._sentence += 1
                        self._sentence_starts[self._sentence] = self._agent_spoken
            case AgentTurnEnded():
                self._agent_turn_active = False
                self._agent_done_t = ev.t
            case EndOfTurn():
                self._eot_t = ev.t
            case _:
                pass

    def _due(self, u: Utterance, t: float, prev_start: float, prev_end: float) -> bool:
        match u.trigger:
            case "at":
                return t >= u.value
            case "after_previous":
                return t >= prev_end + u.value
            case "after_agent_speech":
                return self._agent_turn_active and self._agent_spoken >= u.value
            case "after_agent_sentence":
                start = self._sentence_starts.get(int(u.value))
                return self._agent_turn_active and start is not None and self._agent_spoken - start >= u.offset
            case "with_agent_start":
                s = self._agent_start_t
                return s is not None and s >= prev_start and t >= s + u.value
            case "after_end_of_turn":
                e = self._eot_t
                return e is not None and e >= prev_end and t >= e + u.value
            case "after_agent_done":
                done = self._agent_done_t
                return done is not None and done >= prev_end and t >= done + u.value
        raise AssertionError(u.trigger)

    async def frames(self) -> AsyncIterator[np.ndarray]:
        import asyncio

        t0 = asyncio.get_running_loop().time()
        i = 0
        k = 0
        current: np.ndarray | None = None
        pos = 0
        prev_start = -1.0
        prev_end = 0.0
        idle_after_last = 0
        waited = 0
        while True:
            t = i * FRAME_SAMPLES / SAMPLE_RATE
            if current is None and k < len(self.utterances):
                u = self.utterances[k]
                if self._due(u, t, prev_start, prev_end):
                    current, pos = self.clips[k], 0
                    self.log.append((t, u.text or u.sound or u.noise))
                    self.spans.append(Span(k, t, None, u.label))
                    prev_start = t
                    k += 1
            frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            if current is not None:
                n = min(FRAME_SAMPLES, len(current) - pos)
                frame[:n] = current[pos : pos + n]
                pos += n
                if pos >= len(current):
                    current = None
                    prev_end = t + n / SAMPLE_RATE
                    self.spans[-1].end = prev_end
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
