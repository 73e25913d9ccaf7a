"""Enrolled voice profiles: one JSON file per voice in the user's data directory.

``$DUPLEX_VOICES_DIR``, else ``$XDG_DATA_HOME/duplex/voices``, else
``~/.local/share/duplex/voices``. A profile holds the speaker embedding and a few
statistics of the enrolment (seconds of speech, windows, how consistent the windows
were, level); the audio itself is kept only when the user asks (``NAME.wav`` beside it).

Pure data: no model is imported here (the encoder lives in ``duplex.stages.speaker``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from duplex.errors import SpeakerError

PROFILE_VERSION = 1
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def voices_dir() -> Path:
    """Where profiles live (see module doc)."""
    if os.environ.get("DUPLEX_VOICES_DIR"):
        return Path(os.environ["DUPLEX_VOICES_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "duplex" / "voices"


def check_name(name: str) -> str:
    """A profile name is a file name: letters, digits, ``_`` and ``-``, 1-64 characters."""
    if not NAME_RE.fullmatch(name or ""):
        raise SpeakerError(f"voice name must be 1-64 letters, digits, '_' or '-' (starting with a letter or digit), "
                           f"got {name!r}")
    return name


@dataclass(frozen=True)
class VoiceProfile:
    """One enrolled voice."""

    name: str
    embedding: np.ndarray
    """(256,) unit-norm speaker embedding (the centroid of the enrolment windows)."""
    encoder: str
    """Which encoder made ``embedding``; profiles of another encoder are not comparable."""
    speech_s: float
    n_windows: int
    self_sim_mean: float
    """Mean cosine of the enrolment windows to the centroid (low: noisy or mixed voices)."""
    self_sim_min: float
    level_dbfs: float
    source: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    audio_file: str = ""
    """``NAME.wav`` beside the profile when the user kept the audio, else empty."""

    def __post_init__(self) -> None:
        check_name(self.name)
        e = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
        if e.size == 0 or not np.all(np.isfinite(e)) or float(np.linalg.norm(e)) < 1e-6:
            raise SpeakerError(f"voice profile '{self.name}' has an empty or invalid embedding")
        object.__setattr__(self, "embedding", e)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "name": self.name,
            "encoder": self.encoder,
            "embedding": [round(float(x), 6) for x in self.embedding],
            "speech_s": self.speech_s,
            "n_windows": self.n_windows,
            "self_sim_mean": self.self_sim_mean,
            "self_sim_min": self.self_sim_min,
            "level_dbfs": self.level_dbfs,
            "source": self.source,
            "created": self.created,
            "audio_file": self.audio_file,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "voice profile") -> VoiceProfile:
        if not isinstance(d, dict) or d.get("version") != PROFILE_VERSION:
            raise SpeakerError(f"{where}: not a version-{PROFILE_VERSION} duplex voice profile: enrol again")
        try:
            return cls(
                name=str(d["name"]),
                embedding=np.asarray(d["embedding"], dtype=np.float32),
                encoder=str(d["encoder"]),
                speech_s=float(d["speech_s"]),
                n_windows=int(d["n_windows"]),
                self_sim_mean=float(d["self_sim_mean"]),
                self_sim_min=float(d["self_sim_min"]),
                level_dbfs=float(d["level_dbfs"]),
                source=str(d.get("source", "")),
                created=str(d.get("created", "")),
                audio_file=str(d.get("audio_file", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpeakerError(f"{where}: corrupt voice profile ({exc}): remove it and enrol again") from exc


class ProfileStore:
    """The voices directory: ``save``, ``load``, ``names``, ``remove``.

    Args:
        root: the directory (default :func:`voices_dir`); created on the first save.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else voices_dir()

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if NAME_RE.fullmatch(p.stem))

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, profile: VoiceProfile, audio: np.ndarray | None = None, sample_rate: int = 16_000) -> Path:
        """Write the profile (atomically) and, if given, its enrolment audio as ``NAME.wav``."""
        path = self.path(profile.name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if audio is not None:
                import soundfile as sf

                wav = path.with_suffix(".wav")
                sf.write(str(wav), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
                profile = VoiceProfile(**{**_fields(profile), "audio_file": wav.name})
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(profile.to_dict(), indent=1), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise SpeakerError(f"cannot write voice profile {path}: {exc.strerror or exc}") from exc
        return path

    def load(self, name: str) -> VoiceProfile:
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise SpeakerError(f"no voice profile '{name}' in {self.root} (enrolled: {known}); "
                               f"run: duplex enroll --input WAV --name {name}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpeakerError(f"{path}: cannot read voice profile ({exc}): remove it and enrol again") from exc
        return VoiceProfile.from_dict(data, str(path))

    def remove(self, name: str) -> list[Path]:
        """Delete the profile and its audio; the paths removed (raises if there was none)."""
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise SpeakerError(f"no voice profile '{name}' in {self.root} (enrolled: {known})")
        gone = []
        for p in (path, path.with_suffix(".wav")):
            if p.exists():
                try:
                    p.unlink()
                except OSError as exc:
                    raise SpeakerError(f"cannot remove {p}: {exc.strerror or exc}") from exc
                gone.append(p)
        return gone


def _fields(p: VoiceProfile) -> dict[str, Any]:
    return {k: getattr(p, k) for k in VoiceProfile.__dataclass_fields__}


__all__ = ["NAME_RE", "PROFILE_VERSION", "ProfileStore", "VoiceProfile", "check_name", "voices_dir"]
