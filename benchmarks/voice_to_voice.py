"""Benchmark: voice-to-voice on real speech, measured from the audio files a session records.

``python benchmarks/voice_to_voice.py [--policies predictor,rules] [--runs 2]`` builds a
user WAV of real people taking turns (``../shared/realaudio``: the "go forward ten
meters" command, a LibriVox sentence, the JFK line with its long mid-sentence pauses,
each followed by 7 s of quiet for the agent's answer), runs ``duplex run --input`` on it
paced on the wall clock (``--realtime``: live timing, every model on this CPU), and
measures each turn from the recorded ``mic.wav`` and ``agent.wav``: the user's last
voiced frame (silero VAD on the input) to the agent's first audible sample after it.
Nothing is taken from the engine's own latency events. It also counts agent audio that
starts inside the user's speech (a cut-off). Prints a table, writes
``benchmarks/results/voice_to_voice.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.app import make_source, run_conversation  # noqa: E402
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from duplex.audio.wav import read_audio, write_wav  # noqa: E402
from duplex.config import load_config, parse_override  # noqa: E402
from duplex.stages.factory import load_models  # noqa: E402
from duplex.stages.vad import SileroVAD  # noqa: E402
from policies import make_policy  # noqa: E402
from policies.realcases import REALAUDIO, set_level  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "voice_to_voice.json"
CLIPS = (
    "07_pocketsphinx_goforward/goforward_16k.wav",
    "08_librivox_sense_sensibility_0870/sense_and_sensibility_01_austen_64kb-0870_16k.wav",
    "01_jfk_ask_not/jfk_16k.wav",
)
ANSWER_S = 7.0
AUDIBLE_DB = -45.0


def user_wav(path: Path) -> list[tuple[float, float]]:
    """Write the multi-turn user WAV; returns each turn's (first, last) voiced second."""
    vad = SileroVAD()
    parts: list[np.ndarray] = [np.zeros(SAMPLE_RATE, np.float32)]
    turns = []
    t = 1.0
    for rel in CLIPS:
        x = set_level(read_audio(REALAUDIO / rel), -26.0)
        p = vad.probabilities(x)
        voiced = np.flatnonzero(p >= 0.5)
        first, last = voiced[0] * FRAME_SAMPLES / SAMPLE_RATE, (voiced[-1] + 1) * FRAME_SAMPLES / SAMPLE_RATE
        x = x[: int((last + 0.1) * SAMPLE_RATE)]
        turns.append((t + first, t + last))
        parts += [x, np.zeros(int(ANSWER_S * SAMPLE_RATE), np.float32)]
        t += len(x) / SAMPLE_RATE + ANSWER_S
    write_wav(path, np.concatenate(parts))
    return turns


def first_audible(agent: np.ndarray, after: float, before: float) -> float | None:
    hop = SAMPLE_RATE // 100
    i0, i1 = int(after * SAMPLE_RATE), min(len(agent), int(before * SAMPLE_RATE))
    seg = agent[i0:i1]
    n = len(seg) // hop
    if n == 0:
        return None
    db = 10 * np.log10(np.mean(seg[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(db > AUDIBLE_DB)
    return after + loud[0] * hop / SAMPLE_RATE if loud.size else None


def run_one(policy: str, wav: Path, out: Path, models: object, overrides: list[dict] | None = None) -> None:
    cfg = load_config(None, [*(overrides or []), {"policy": {"name": policy}}])
    source = make_source(str(wav), None, models, True)
    asyncio.run(run_conversation(cfg, models, source, session_dir=out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="predictor,rules")
    ap.add_argument("--runs", type=int, default=1, help="repeat each policy this many times")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run, as duplex run --set (e.g. speaker.enabled=false)")
    a = ap.parse_args(argv)
    overrides = [parse_override(x) for x in a.set]
    tmp = Path(tempfile.mkdtemp(prefix="duplex-v2v-"))
    wav = tmp / "user.wav"
    turns = user_wav(wav)
    models = load_models(load_config(None, overrides), make_policy)
    report: dict[str, dict] = {}
    for policy in a.policies.split(","):
        lat: list[float] = []
        cut = 0
        unanswered = 0
        for k in range(a.runs):
            sdir = tmp / f"{policy}-{k}"
            run_one(policy, wav, sdir, models, overrides)
            agent = read_audio(sdir / "agent.wav")
            for i, (first, last) in enumerate(turns):
                nxt = turns[i + 1][0] if i + 1 < len(turns) else last + ANSWER_S
                if first_audible(agent, first + 0.3, last) is not None:
                    cut += 1
                t = first_audible(agent, last, nxt)
                if t is None:
                    unanswered += 1
                else:
                    lat.append(t - last)
        report[policy] = {
            "turns": len(lat) + unanswered, "answered": len(lat), "cut_into_user_speech": cut,
            "v2v_ms_p50": round(float(np.percentile(lat, 50)) * 1000) if lat else None,
            "v2v_ms_p95": round(float(np.percentile(lat, 95)) * 1000) if lat else None,
            "v2v_ms": [round(x * 1000) for x in lat],
        }
    print("| policy | turns answered | voice-to-voice p50 | p95 | agent audio inside user speech |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for p, r in report.items():
        print(f"| {p} | {r['answered']}/{r['turns']} | {r['v2v_ms_p50']} ms | {r['v2v_ms_p95']} ms | {r['cut_into_user_speech']} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"clips": list(CLIPS), "realtime": True, "overrides": a.set, "policies": report}, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
