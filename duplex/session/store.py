"""Loading a recorded session directory, with the repairs a crash makes necessary.

A session written by :class:`duplex.session.recorder.Recorder` and cut short by
``kill -9`` has WAV headers that undercount their data and maybe a half-written last
line in ``events.jsonl``. :func:`load_session` fixes the first (rewriting the header
in place when it can) and drops the second with a warning. Anything else wrong (a
missing file, a hand-edited value of the wrong type, an unknown format version, a WAV
that no longer matches the checksum the recorder wrote, no audio at all, a time that
is negative or not finite) is a :class:`SessionError` naming the file and what to fix.

:func:`prepare_session_dir` checks a place to record into (``--out``) before any model
loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.errors import AudioError, SessionError
from duplex.events import EVENT_TYPES, Event, event_from_dict
from duplex.session import FORMAT_VERSION
from duplex.session.recorder import WAV_FILES, pcm16_to_float

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
_HEADER = 44
SESSION_FILES = ("session.json", *WAV_FILES, "events.jsonl")
MAX_SESSION_S = 7 * 86400.0
"""The latest an event may happen (a week of session time): anything later is corruption."""


@dataclass(frozen=True)
class Session:
    """A loaded session: audio as float32 (exactly what the listener heard), events in order."""

    path: Path
    meta: dict[str, Any]
    mic: np.ndarray
    """(n,) float32, 16 kHz: everything the microphone heard (after any mic filter)."""
    agent: np.ndarray
    """(n,) float32, 16 kHz: what the speaker played, sample-aligned with ``mic``."""
    events: tuple[Event, ...]
    warnings: tuple[str, ...] = field(default=())
    """What was repaired or skipped while loading (one line each)."""

    @property
    def duration(self) -> float:
        return len(self.mic) / SAMPLE_RATE

    @property
    def n_frames(self) -> int:
        return len(self.mic) // FRAME_SAMPLES

    @property
    def complete(self) -> bool:
        """False when the recording did not close normally (a crash, ``kill -9``)."""
        return bool(self.meta.get("complete"))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta.get("config") or {})

    def decisions(self) -> list[Event]:
        return [e for e in self.events if e.DECISION]


def load_session(path: str | Path, *, repair: bool = True) -> Session:
    """Read a session directory.

    Args:
        path: the directory (``session.json``, ``mic.wav``, ``agent.wav``, ``events.jsonl``).
        repair: rewrite WAV headers a crash left stale (in place, when writable).

    Raises:
        SessionError: the directory is not a session, or a file in it is corrupt.
    """
    d = Path(path)
    if not d.exists():
        raise SessionError(f"session not found: {d}")
    if not d.is_dir():
        raise SessionError(f"a session is a directory (session.json, mic.wav, agent.wav, events.jsonl), got a file: {d}")
    warnings: list[str] = []
    meta = _read_meta(d / "session.json")
    sums = meta.get("sha256") or {}
    mic = _read_pcm16(d / "mic.wav", repair, warnings, sums.get("mic.wav"))
    agent = _read_pcm16(d / "agent.wav", repair, warnings, sums.get("agent.wav"))
    n = min(len(mic), len(agent))
    n -= n % FRAME_SAMPLES
    if n == 0:
        raise SessionError(f"{d}: no audio to replay: mic.wav holds {len(mic)} samples and agent.wav "
                           f"{len(agent)}, less than one {FRAME_SAMPLES}-sample frame in both")
    if len(mic) != len(agent) or len(mic) != n:
        warnings.append(f"mic.wav ({len(mic)} samples) and agent.wav ({len(agent)}) cut to {n} "
                        f"samples ({n / SAMPLE_RATE:.3f} s): whole frames held by both")
    events = _read_events(d / "events.jsonl", warnings)
    for w in warnings:
        log.warning("%s: %s", d, w)
    return Session(d, meta, pcm16_to_float(mic[:n]), pcm16_to_float(agent[:n]), tuple(events), tuple(warnings))


def prepare_session_dir(path: str | Path, *, overwrite: bool = False) -> Path:
    """Check (and create) a directory to record a session into, before models load.

    Raises:
        SessionError: ``path`` is a file, holds a session already (unless ``overwrite``),
            or cannot be created or written.
    """
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise SessionError(f"cannot record into {d}: it is a file, not a directory; choose another --out")
    if d.is_dir() and not overwrite:
        held = [n for n in SESSION_FILES if (d / n).exists()]
        if held:
            raise SessionError(f"{d} already holds a session ({', '.join(held)}); choose another --out or delete it")
    created = not d.exists()
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".duplex-write-test-"):
            pass
    except OSError as exc:
        if created:
            _remove_empty_dirs(d)
        why = exc.strerror or str(exc)
        raise SessionError(f"cannot record into {d}: {why}; choose another --out") from exc
    return d


def _remove_empty_dirs(d: Path) -> None:
    """Undo a failed ``mkdir(parents=True)`` as far as the directories are empty."""
    for p in (d, *d.parents):
        try:
            p.rmdir()
        except OSError:
            return


def annotate(path: str | Path, **fields: Any) -> None:
    """Add top-level fields to a session's ``session.json`` (atomically)."""
    p = Path(path) / "session.json"
    meta = _read_meta(p)
    meta.update(fields)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, p)


# --- session.json ------------------------------------------------------------------------


def _read_meta(p: Path) -> dict[str, Any]:
    if not p.exists():
        raise SessionError(f"not a session: {p.name} missing in {p.parent}")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SessionError(f"{p}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise SessionError(f"{p}: not a session.json (nested too deeply)") from None
    except OSError as exc:
        raise SessionError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if not isinstance(meta, dict):
        raise SessionError(f"{p}: expected a JSON object")
    fmt = meta.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise SessionError(f"{p}: 'format' must be the format version (an integer), got {fmt!r}")
    if fmt > FORMAT_VERSION:
        raise SessionError(f"{p}: session format {fmt} is newer than this duplex reads ({FORMAT_VERSION}); upgrade duplex")
    if fmt < 1:
        raise SessionError(f"{p}: unknown session format {fmt}")
    sr = meta.get("sample_rate")
    if sr != SAMPLE_RATE:
        raise SessionError(f"{p}: sample_rate must be {SAMPLE_RATE}, got {sr!r}")
    fs = meta.get("frame_samples", FRAME_SAMPLES)
    if fs != FRAME_SAMPLES:
        raise SessionError(f"{p}: frame_samples must be {FRAME_SAMPLES}, got {fs!r}")
    if not isinstance(meta.get("config", {}), dict):
        raise SessionError(f"{p}: 'config' must be a table of settings")
    dur = meta.get("duration_s")
    if dur is not None and (isinstance(dur, bool) or not isinstance(dur, (int, float)) or not _finite(dur) or dur < 0):
        raise SessionError(f"{p}: 'duration_s' must be a non-negative number of seconds, got {dur!r}")
    sums = meta.get("sha256")
    if sums is not None and (
        not isinstance(sums, dict)
        or not all(isinstance(sums.get(n, ""), str) and len(sums.get(n, "")) in (0, 64) for n in sums)
    ):
        raise SessionError(f"{p}: 'sha256' must map each WAV file to its 64-digit hex SHA-256")
    return meta


def _finite(x: float) -> bool:
    return isinstance(x, int) or math.isfinite(x)


# --- WAV ------------------------------------------------------------------------------------


def _read_pcm16(p: Path, repair: bool, warnings: list[str], sha256: str | None = None) -> np.ndarray:
    """The 16-bit samples of a mono 16 kHz WAV; a stale duplex header is trusted less than the file size.

    ``sha256``: the checksum the recorder wrote; a file that no longer matches it is refused.
    """
    if not p.exists():
        raise SessionError(f"not a complete session: {p.name} missing in {p.parent}")
    if p.is_dir():
        raise SessionError(f"{p}: expected a WAV file, got a directory")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SessionError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise SessionError(f"{p}: not a WAV file")
    if sha256 and hashlib.sha256(raw).hexdigest() != sha256.lower():
        raise SessionError(f"{p}: does not match the SHA-256 session.json recorded for it: the file was changed "
                           f"or corrupted after recording (if you edited it on purpose, delete its entry under "
                           f"'sha256' in session.json)")
    if len(raw) >= _HEADER and raw[12:16] == b"fmt " and raw[36:40] == b"data":
        return _read_plain(p, raw, repair, warnings)
    return _read_other(p)


def _read_plain(p: Path, raw: bytes, repair: bool, warnings: list[str]) -> np.ndarray:
    fmt, ch, sr = struct.unpack("<HHI", raw[20:28])
    bits = struct.unpack("<H", raw[34:36])[0]
    _check_format(p, fmt == 1 and bits == 16, ch, sr)
    declared = struct.unpack("<I", raw[40:44])[0]
    held = len(raw) - _HEADER
    held -= held % 2
    if declared != held:
        what = "repaired" if repair else "read past it"
        warnings.append(f"{p.name}: header says {declared // 2} samples, the file holds {held // 2} "
                        f"(the recording was cut short); {what}")
        if repair:
            try:
                from duplex.audio.wav import repair_wav_header

                repair_wav_header(p)
            except (OSError, AudioError) as exc:
                warnings.append(f"{p.name}: header not rewritten ({exc}); read in memory")
    return np.frombuffer(raw, dtype="<i2", count=held // 2, offset=_HEADER).astype(np.int16)


def _read_other(p: Path) -> np.ndarray:
    """A WAV with a different layout (re-saved by an editor): read it through soundfile."""
    import soundfile as sf

    try:
        info = sf.info(str(p))
        data, _ = sf.read(str(p), dtype="int16", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError, TypeError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SessionError(f"{p}: cannot read the WAV ({first})") from exc
    _check_format(p, info.subtype == "PCM_16", info.channels, info.samplerate)
    return data[:, 0].copy()


def _check_format(p: Path, pcm16: bool, ch: int, sr: int) -> None:
    if not pcm16 or ch != 1 or sr != SAMPLE_RATE:
        raise SessionError(f"{p}: must be 16-bit PCM, mono, {SAMPLE_RATE} Hz (got {ch} channel(s) at {sr} Hz"
                           f"{'' if pcm16 else ', not 16-bit PCM'})")


# --- events.jsonl --------------------------------------------------------------------------

_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str, bool]] = {
    "float": (_NUMBER, "a number", False),
    "float | None": (_NUMBER, "a number or null", True),
    "int": ((int,), "an integer", False),
    "str": ((str,), "a string", False),
    "bool": ((bool,), "true or false", False),
}


def _bad_field(ev: Event) -> tuple[str, str] | None:
    """The first field whose value does not have its annotated type (hand edits), if any."""
    import dataclasses

    for f in dataclasses.fields(ev):
        spec = _FIELD_TYPES.get(str(f.type))
        if spec is None:
            continue  # enums and tuples are checked by event_from_dict
        types, what, nullable = spec
        v = getattr(ev, f.name)
        if v is None and nullable:
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            return f.name, what
        if isinstance(v, float) and not math.isfinite(v):
            return f.name, "a finite number"
    return None



def _read_events(p: Path, warnings: list[str]) -> list[Event]:
    if not p.exists():
        raise SessionError(f"not a complete session: {p.name} missing in {p.parent}")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        # A crash can cut a multi-byte character in half; only the last line may suffer.
        text = p.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise SessionError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    lines = text.split("\n")
    truncated_ok = not text.endswith("\n")  # only a line the writer never finished may be bad
    out: list[Event] = []
    unknown: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last = n == len(lines)
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            if last and truncated_ok:
                warnings.append(f"{p.name}: the last line (line {n}) was cut short by a crash; ignored")
                break
            raise SessionError(f"{p}: line {n} is not valid JSON ({exc.msg})") from exc
        except RecursionError:
            raise SessionError(f"{p}: line {n} is not an event (nested too deeply)") from None
        if not isinstance(d, dict) or not isinstance(d.get("type"), str) or "t" not in d:
            raise SessionError(f"{p}: line {n} is not an event (needs 'type' and 't')")
        if d["type"] not in EVENT_TYPES:
            unknown[d["type"]] = unknown.get(d["type"], 0) + 1
            continue
        try:
            ev = event_from_dict(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(f"{p}: line {n}: bad {d['type']} event ({exc})") from exc
        bad = _bad_field(ev)
        if bad is not None:
            raise SessionError(f"{p}: line {n}: {d['type']}.{bad[0]} must be {bad[1]}, got {getattr(ev, bad[0])!r}")
        if not 0 <= ev.t <= MAX_SESSION_S:
            raise SessionError(f"{p}: line {n}: {d['type']}.t must be a time in 0..{MAX_SESSION_S:.0f} s, got {ev.t!r}")
        out.append(ev)
    if unknown:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(unknown.items()))
        warnings.append(f"{p.name}: skipped events of types this duplex does not know ({kinds})")
    return out
