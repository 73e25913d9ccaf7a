"""The offline policy harness: interchange cases in, the engine's per-frame inputs out.

A *case* is a stereo 16 kHz WAV (channel 0 = what the agent played, channel 1 = the
microphone) and a TSV of labelled events (``start_s end_s label``). The harness turns a
case into the exact :class:`duplex.turn.PolicyInput` stream the engine would build: the
microphone goes through the same :class:`duplex.listener.Listener` (silero VAD, speech
segmenter, streaming pocketsphinx), the playback channel gives ``agent_speaking`` and
``agent_spoken``. Evaluation (``policies.eval``) and training-feature extraction
(``policies.data``) both use it, so the predictor is trained on what it sees at run time.

The run is open loop on the audio (the recording does not stop when a policy barges in)
and closed loop on one flag, ``user_turn_open``, which a policy's END_OF_TURN clears.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from duplex.clock import PerfTimer
from duplex.config import ASRConfig, EngineConfig, VADConfig, load_config
from duplex.errors import AudioError, PolicyError
from duplex.events import Decision
from duplex.listener import Listener, ListenerFrame
from duplex.session.export import LABELS as CASE_LABELS
from duplex.stages.whisper_asr import PARTIALS_SECOND_PASS
from duplex.turn import PolicyInput, PolicyOutput, TurnPolicy

log = logging.getLogger(__name__)

LABELS = CASE_LABELS
"""Event labels of the interchange format (defined once, by the session exporter that writes it)."""

FRAME_S = FRAME_MS / 1000
AGENT_ACTIVE_DB = -50.0
"""A playback frame louder than this is agent audio."""
AGENT_GAP_S = 0.8
"""Playback pauses shorter than this stay inside one reply (sentence gaps)."""


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Case:
    """One interchange case: ``audio`` is ``(n, 2)`` float32, channel 0 playback, 1 mic."""

    name: str
    audio: np.ndarray
    events: tuple[LabelledEvent, ...]

    @property
    def n_frames(self) -> int:
        return self.audio.shape[0] // FRAME_SAMPLES

    @property
    def duration(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE


def read_events(path: str | Path) -> tuple[LabelledEvent, ...]:
    """Parse a case TSV (``start_s<TAB>end_s<TAB>label``; ``#`` comments and blanks skipped)."""
    out: list[LabelledEvent] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            raise PolicyError(f"{path}:{n}: expected 'start_s<TAB>end_s<TAB>label', got {line!r}")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError as exc:
            raise PolicyError(f"{path}:{n}: start and end must be numbers: {line!r}") from exc
        label = parts[2].strip()
        if label not in LABELS:
            raise PolicyError(f"{path}:{n}: unknown label {label!r} (known: {', '.join(LABELS)})")
        if end < start:
            raise PolicyError(f"{path}:{n}: end {end} is before start {start}")
        out.append(LabelledEvent(start, end, label))
    return tuple(sorted(out, key=lambda e: (e.start, e.end)))


def write_events(path: str | Path, events: Sequence[LabelledEvent]) -> None:
    lines = [f"{e.start:.3f}\t{e.end:.3f}\t{e.label}" for e in sorted(events, key=lambda e: e.start)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_case(wav: str | Path) -> Case:
    """Read ``NAME.wav`` and ``NAME.tsv`` beside it.

    Raises:
        PolicyError: the WAV is not stereo or the TSV is missing or malformed.
    """
    from duplex.audio.wav import read_audio

    wav = Path(wav)
    tsv = wav.with_suffix(".tsv")
    if not tsv.exists():
        raise PolicyError(f"case {wav.name} has no labels file {tsv.name} beside it")
    try:
        audio = read_audio(wav, channels="all")
    except AudioError as exc:
        raise PolicyError(str(exc)) from exc
    if audio.ndim != 2 or audio.shape[1] != 2:
        raise PolicyError(f"case {wav.name} must be stereo (channel 0 agent, channel 1 mic), got {audio.shape}")
    return Case(wav.stem, audio.astype(np.float32), read_events(tsv))


def list_cases(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise PolicyError(f"cases directory not found: {d}")
    wavs = sorted(p for p in d.glob("*.wav") if p.with_suffix(".tsv").exists())
    if not wavs:
        raise PolicyError(f"no cases (NAME.wav + NAME.tsv) in {d}")
    return wavs


def frame_db(x: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of each whole frame of a mono signal; ``(n_frames,)``."""
    n = len(x) // FRAME_SAMPLES
    fr = x[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES).astype(np.float64)
    return np.maximum(-120.0, 10.0 * np.log10(np.mean(fr * fr, axis=1) + 1e-12))


def agent_activity(playback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: is a reply in flight, and seconds of it played so far.

    The engine knows when a reply is in flight (it queued the audio); offline we read it
    from the playback channel: active frames, with pauses under ``AGENT_GAP_S`` merged.
    """
    db = frame_db(playback)
    active = db > AGENT_ACTIVE_DB
    speaking = active.copy()
    gap = int(round(AGENT_GAP_S / FRAME_S))
    idx = np.flatnonzero(active)
    for a, b in zip(idx[:-1], idx[1:], strict=False):
        if 1 < b - a <= gap:
            speaking[a:b] = True
    spoken = np.zeros(len(db), dtype=np.float32)
    run = 0
    for i, s in enumerate(speaking):
        run = run + 1 if s else 0
        spoken[i] = run * FRAME_S
    return speaking, spoken


def make_listener(asr: bool = True, drafts: bool = False) -> Listener:
    """The engine's listener with default VAD/ASR settings.

    Partials come from streaming pocketsphinx (none if ``asr=False``). With ``drafts`` the
    recogniser is the default profile's ear (:class:`~duplex.stages.whisper_asr.WhisperFinalsASR`:
    the same pocketsphinx partials, plus Whisper tiny.en's final decoded ahead in every
    pause, ``ListenerFrame.draft``), waited for as the engine does in lockstep runs.
    """
    from duplex.stages.asr import PocketSphinxASR
    from duplex.stages.vad import SileroVAD

    if asr and drafts:
        from duplex.stages.whisper_asr import WhisperFinalsASR

        cfg = load_config()  # configs/default.toml: what `duplex run` hears with
        if cfg.asr.backend != "faster-whisper" or cfg.asr.partials != "pocketsphinx":
            raise PolicyError("the default profile's ear is no longer Whisper finals over pocketsphinx partials")
        listener = Listener(SileroVAD(), WhisperFinalsASR.from_config(cfg.asr), cfg.vad, cfg.asr)
        listener.wait_drafts = True
        return listener
    return Listener(SileroVAD(), PocketSphinxASR() if asr else None, VADConfig(), ASRConfig())


def listen(mic: np.ndarray, listener: Listener) -> list[ListenerFrame]:
    """Run the listener over every whole frame of ``mic`` (resets it first)."""
    listener.reset()
    n = len(mic) // FRAME_SAMPLES
    mic = mic.astype(np.float32)
    return [listener.step(mic[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)]


LISTENER_CACHE = Path(__file__).resolve().parent / "data" / "cache" / "listener"


def listen_cached(wav: str | Path, mic: np.ndarray, asr: bool = True, cache: Path | None = LISTENER_CACHE,
                  drafts: bool = False) -> list[ListenerFrame]:
    """:func:`listen`, memoised on disk by the microphone's content (ASR is the slow part).

    The listener is deterministic, so the frames of a given microphone signal never
    change; eval runs several policies and several passes over the same cases. ``wav``
    only names the case in the log.
    """
    import hashlib
    import pickle

    key = hashlib.sha1(np.ascontiguousarray(mic, dtype=np.float32).tobytes()).hexdigest()[:24]
    path = None
    if cache is not None:
        ear = ("_drafts" + ("" if PARTIALS_SECOND_PASS else "_1pass")) if asr and drafts else ""
        path = cache / f"{key}{'' if asr else '_noasr'}{ear}.pkl"
        if path.exists():
            with open(path, "rb") as f:
                return pickle.load(f)  # our own cache files, written below
    log.debug("running the listener over %s (asr=%s)", wav, asr)
    frames = listen(mic, make_listener(asr=asr, drafts=drafts))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(frames, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return frames


@dataclass(frozen=True)
class Trace:
    """What a policy did on a case: one entry per frame."""

    t: np.ndarray
    """Frame end times, seconds."""
    decisions: list[Decision | None]
    probs: list[dict[str, float]]
    compute_s: np.ndarray
    """Wall seconds each ``step`` took."""
    agent_speaking: np.ndarray
    user_turn_open: np.ndarray


class CaseRunner:
    """Builds PolicyInputs for one case from its audio and the listener's frames."""

    def __init__(self, audio: np.ndarray, frames: Sequence[ListenerFrame], pause_timeout_s: float | None = None) -> None:
        n = min(len(frames), audio.shape[0] // FRAME_SAMPLES)
        assert n > 0, "a case needs at least one frame"
        self.audio = audio[: n * FRAME_SAMPLES].astype(np.float32)
        self.frames = list(frames[:n])
        self.n = n
        self.agent_speaking, self.agent_spoken = agent_activity(self.audio[:, 0])
        self.pause_timeout_s = EngineConfig().pause_timeout_s if pause_timeout_s is None else pause_timeout_s

    def inputs(self) -> Iterator[PolicyInput]:
        """PolicyInputs with ``user_turn_open`` as if no policy ever ended the turn."""
        flag = _TurnFlag()
        for i in range(self.n):
            flag.pre(self.agent_speaking[i], self.frames[i].user_speaking)
            yield self._input(i, flag.open)

    def run(self, policy: TurnPolicy) -> Trace:
        """Step ``policy`` over the case, closing the loop on ``user_turn_open`` and ``agent_paused``.

        A ``PAUSE`` holds as the engine holds it (:mod:`duplex.turn`): until a
        ``RESUME``/``BACKCHANNEL``/``BARGE_IN``, the agent stopping, or
        ``pause_timeout_s``, when the engine resolves it itself (a barge-in if the user
        is still speaking, else a resume); that resolution is written into the trace.
        """
        policy.reset()
        flag = _TurnFlag()
        decisions: list[Decision | None] = []
        probs: list[dict[str, float]] = []
        compute = np.zeros(self.n)
        opened = np.zeros(self.n, dtype=bool)
        paused_at: float | None = None
        for i in range(self.n):
            flag.pre(self.agent_speaking[i], self.frames[i].user_speaking)
            if not self.agent_speaking[i]:
                paused_at = None
            x = self._input(i, flag.open, paused_at is not None)
            opened[i] = flag.open
            t0 = PerfTimer.now()
            out: PolicyOutput = policy.step(x)
            compute[i] = PerfTimer.now() - t0
            d = out.decision
            if x.agent_speaking:
                if d is Decision.PAUSE and paused_at is None:
                    paused_at = x.t
                elif d is Decision.PAUSE or (d is Decision.RESUME and paused_at is None):
                    d = None  # the engine ignores these
                elif d in (Decision.RESUME, Decision.BACKCHANNEL, Decision.BARGE_IN):
                    paused_at = None
                elif paused_at is not None and x.t - paused_at >= self.pause_timeout_s:
                    d = Decision.BARGE_IN if x.user_speaking else Decision.RESUME
                    paused_at = None
            decisions.append(d)
            probs.append(out.probs)
            flag.update(x, d)
        t = (np.arange(self.n) + 1) * FRAME_S
        return Trace(t, decisions, probs, compute, self.agent_speaking.copy(), opened)

    def _input(self, i: int, turn_open: bool, paused: bool = False) -> PolicyInput:
        f = self.frames[i]
        sl = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        return PolicyInput(
            t=(i + 1) * FRAME_S,
            mic=self.audio[sl, 1],
            playback=self.audio[sl, 0],
            vad=f.vad,
            user_speaking=f.user_speaking,
            speech_run=f.speech_run,
            silence=f.silence,
            agent_speaking=bool(self.agent_speaking[i]),
            agent_spoken=float(self.agent_spoken[i]),
            partial=f.partial,
            user_turn_open=turn_open,
            agent_paused=paused,
            draft=f.draft,
        )


class _TurnFlag:
    """``user_turn_open`` as the engine keeps it.

    Opens while the user speaks with the agent silent (or on a barge-in); closes on the
    policy's END_OF_TURN and when a new agent reply starts.
    """

    def __init__(self) -> None:
        self.open = False
        self._agent = False

    def pre(self, agent_speaking: bool, user_speaking: bool) -> None:
        if agent_speaking and not self._agent:
            self.open = False
        if user_speaking and not agent_speaking:
            self.open = True
        self._agent = bool(agent_speaking)

    def update(self, x: PolicyInput, decision: Decision | None) -> None:
        if decision is Decision.BARGE_IN:
            self.open = True
        elif decision is Decision.END_OF_TURN:
            self.open = False
