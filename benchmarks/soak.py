"""Benchmark: an accelerated soak (issue 16, "long runs flat").

One long conversation on the simulated clock (lockstep, as ``duplex run --simulate``),
with a generated simulated user who keeps talking: questions, backchannels ("okay."),
barge-ins ("wait, stop, ..."), pauses inside lines and long silences. The session is
ended by the engine's own ``end()`` once ``--minutes`` of SESSION time have passed.

While it runs, a bus subscriber samples every ``--every`` session-seconds: process RSS
(VmRSS from /proc/self/status), the player's pending audio and segment count, the
engine's queued fixed lines, the bus's dropped count, and the number of events so far.
A small asyncio task ticks on the loop's (monotonic, wall) clock and records how late
each tick ran: the event-loop lateness.

Reported: RSS after warm-up (first 10 % of the session) and at the end, the RSS slope in
MB per session-hour (least squares over the post-warm-up samples), lateness p99 in the
first and last ten minutes of session time, queue sizes first vs last, events per minute.
A Markdown table on stdout, ``benchmarks/results/soak.json``, and ``docs/soak.png`` when
matplotlib is importable (it is not a project dependency; without it the plot is skipped).

Run::

    nice -n 5 .venv/bin/python -m benchmarks.soak --minutes 60
    .venv/bin/python -m benchmarks.soak --minutes 5 --out /tmp/soak5.json   # a quick check
    .venv/bin/python -m benchmarks.soak --minutes 10 --ort-arena --out /tmp/before.json  # piper as it was
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.app import new_session_dir, run_conversation  # noqa: E402
from duplex.bus import EventBus  # noqa: E402
from duplex.config import load_config  # noqa: E402
from duplex.engine import Engine  # noqa: E402
from duplex.events import Event  # noqa: E402
from duplex.simuser import SimulatedUser, UserVoice, Utterance, parse_utterance  # noqa: E402
from duplex.stages import tts as tts_stage  # noqa: E402
from duplex.stages.factory import load_models  # noqa: E402
from policies import make_policy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
PLOT = ROOT / "docs" / "soak.png"
SVG = ROOT / "docs" / "soak.svg"
TICK_S = 0.05
"""The lateness probe's period on the wall clock."""
WINDOW_S = 600.0
"""First and last ten minutes of session time, for the lateness comparison."""

QUESTIONS = [
    "Can you tell me something interesting about the moon?",
    "What is the tallest mountain in Europe?",
    "How do bees make honey?",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "How far away is the sun from the earth?",
    "Can you recommend a good book about history?",
    "What is the capital of Australia?",
    "How does a rainbow form?",
    "Tell me a short fact about octopuses.",
    "What is a good way to learn a new language?",
    "Why do cats purr?",
]
BACKCHANNELS = ["okay.", "mm-hmm.", "right."]


def rss_mb() -> float:
    """This process's resident set size (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_script(minutes: float, seed: int = 16) -> list[Utterance]:
    """A user who keeps talking for at least ``minutes`` of session time.

    Cycles of: a question; then, in turn, a backchannel while the agent answers, a barge-in
    ("wait, stop"), a question with a pause inside it, or a long silence before the next
    question. A cycle lasts roughly 15-25 s, so there are more lines than the session
    needs; the soak ends the session on the clock, not the script.
    """
    rng = random.Random(seed)
    # Every line is timed from the previous one (after_previous), never from what the
    # agent did: a trigger on the agent (after_agent_done, with_agent_start) waits
    # forever when the agent lets a line pass without a reply, and a 75-minute run
    # ended at 27.5 minutes that way. The gaps are chosen so that a barge-in or a
    # backchannel usually lands while the agent is answering the previous question.
    items: list[dict[str, Any]] = [{"text": rng.choice(QUESTIONS), "at": 0.6}]
    n_cycles = int(minutes * 60 / 8) + 10
    for c in range(n_cycles):
        kind = c % 4
        if kind == 0:  # a backchannel the agent should ignore, then the next question
            items.append({"text": rng.choice(BACKCHANNELS), "after_previous": 3.0})
            items.append({"text": rng.choice(QUESTIONS), "after_previous": 10.0})
        elif kind == 1:  # a barge-in
            items.append({"text": "Wait, stop, sorry. " + rng.choice(QUESTIONS), "after_previous": 2.5})
            items.append({"text": rng.choice(QUESTIONS), "after_previous": 12.0})
        elif kind == 2:  # a pause inside the user's turn
            items.append({"text": "Let me think. [pause 1500] " + rng.choice(QUESTIONS), "after_previous": 12.0})
        else:  # a long silence before the next question
            items.append({"text": rng.choice(QUESTIONS), "after_previous": 20.0})
    return [parse_utterance(it, f"soak: say #{k}") for k, it in enumerate(items, 1)]


@dataclass
class Sampler:
    """Samples the process and the engine on the session clock; probes loop lateness."""

    every_s: float
    end_s: float
    samples: list[dict[str, float]] = field(default_factory=list)
    lateness: list[tuple[float, float]] = field(default_factory=list)
    """(session time of the last event, seconds the tick was late)."""
    engine: Engine | None = None
    bus: EventBus | None = None
    n_events: int = 0
    t: float = 0.0
    _next: float = 0.0
    _late_seen: int = 0
    _wall0: float = field(default_factory=time.monotonic)

    def on_engine(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, ev: Event) -> None:
        self.n_events += 1
        self.t = max(self.t, ev.t)
        if self.t >= self._next:
            self._next = self.t + self.every_s
            self.samples.append(self.sample())
        if self.t >= self.end_s and self.engine is not None:
            self.engine.end("soak: session time reached")

    def sample(self) -> dict[str, float]:
        eng = self.engine
        player = eng.player if eng is not None else None
        recent = [lat for _, lat in self.lateness[self._late_seen :]]
        self._late_seen = len(self.lateness)
        return {
            "t": round(self.t, 3),
            "wall_s": round(time.monotonic() - self._wall0, 3),
            "rss_mb": round(rss_mb(), 2),
            "late_p99_ms": p99_ms(recent) if recent else 0.0,
            "events": self.n_events,
            "player_pending_samples": player.pending if player is not None else -1,
            "player_segments": len(player._queue) if player is not None else -1,  # noqa: SLF001
            "say_queue": len(eng._say_queue) if eng is not None else -1,  # noqa: SLF001
            "bus_dropped": self.bus.dropped if self.bus is not None else -1,
        }

    async def probe(self) -> None:
        """Tick every TICK_S on the loop's clock and record how late each tick ran."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            self.lateness.append((self.t, max(0.0, loop.time() - due)))


def p99_ms(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)) * 1000, 2) if values else None


def summarise(s: Sampler, minutes: float, wall_s: float, policy: str) -> dict[str, Any]:
    samples = s.samples
    end_t = samples[-1]["t"] if samples else 0.0
    warm_t = 0.1 * end_t
    post = [x for x in samples if x["t"] >= warm_t]
    ts = np.array([x["t"] for x in post])
    rss = np.array([x["rss_mb"] for x in post])
    slope = float(np.polyfit(ts / 3600.0, rss, 1)[0]) if len(post) >= 3 else None
    first = [lat for t, lat in s.lateness if t <= WINDOW_S]
    last = [lat for t, lat in s.lateness if t >= end_t - WINDOW_S]
    q = ("player_pending_samples", "player_segments", "say_queue", "bus_dropped")
    st = s.engine.stats if s.engine is not None else None
    return {
        "policy": policy,
        "minutes_asked": minutes,
        "session_s": round(end_t, 1),
        "wall_s": round(wall_s, 1),
        "speed_x_realtime": round(end_t / wall_s, 2) if wall_s else None,
        "warmup_s": round(warm_t, 1),
        "rss_after_warmup_mb": post[0]["rss_mb"] if post else None,
        "rss_end_mb": samples[-1]["rss_mb"] if samples else None,
        "rss_growth_after_warmup_mb": round(samples[-1]["rss_mb"] - post[0]["rss_mb"], 2) if post else None,
        "rss_slope_mb_per_session_hour": round(slope, 2) if slope is not None else None,
        "rss_max_mb": max(x["rss_mb"] for x in samples) if samples else None,
        "lateness_window_s": WINDOW_S,
        "lateness_p99_first_ms": p99_ms(first),
        "lateness_p99_last_ms": p99_ms(last),
        "lateness_ticks": len(s.lateness),
        "queues_first": {k: samples[0][k] for k in q} if samples else {},
        "queues_last": {k: samples[-1][k] for k in q} if samples else {},
        "queues_max_after_warmup": {k: max(x[k] for x in post) for k in q} if post else {},
        "events": s.n_events,
        "events_per_session_minute": round(s.n_events / (end_t / 60.0), 1) if end_t else None,
        "turns": st.turns if st else None,
        "barge_ins": st.barge_ins if st else None,
        "backchannels": st.backchannels if st else None,
        "samples": samples,
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("session time / wall time", f"{r['session_s'] / 60:.1f} min / {r['wall_s'] / 60:.1f} min "
                                     f"({r['speed_x_realtime']}x real time), policy {r['policy']}"),
        ("turns / barge-ins / backchannels", f"{r['turns']} / {r['barge_ins']} / {r['backchannels']}"),
        ("RSS after warm-up (first 10 %)", f"{r['rss_after_warmup_mb']} MB at {r['warmup_s']} s"),
        ("RSS at the end", f"{r['rss_end_mb']} MB (growth {r['rss_growth_after_warmup_mb']} MB)"),
        ("RSS slope after warm-up", f"{r['rss_slope_mb_per_session_hour']} MB per session-hour"),
        ("loop lateness p99, first / last 10 min", f"{r['lateness_p99_first_ms']} / {r['lateness_p99_last_ms']} ms"),
        ("player pending samples, first / last / max",
         f"{r['queues_first'].get('player_pending_samples')} / {r['queues_last'].get('player_pending_samples')}"
         f" / {r['queues_max_after_warmup'].get('player_pending_samples')}"),
        ("player segments, first / last / max",
         f"{r['queues_first'].get('player_segments')} / {r['queues_last'].get('player_segments')}"
         f" / {r['queues_max_after_warmup'].get('player_segments')}"),
        ("bus events dropped (last)", f"{r['queues_last'].get('bus_dropped')}"),
        ("events per session-minute", f"{r['events_per_session_minute']} ({r['events']} events)"),
    ]
    lines = ["| measure | value |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def plot(samples: list[dict[str, Any]], path: Path) -> str:
    """Write the RSS/lateness plot as a PNG (the SVG's two panels: RSS, and the loop
    lateness p99 of each sample window); returns what happened (matplotlib is optional:
    ``pip install matplotlib`` in the venv, then ``--replot`` draws it from the JSON)."""
    try:
        import matplotlib  # not a project dependency: the plot is optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed in this environment: PNG skipped"
    fig, (a1, a2) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    minutes = [x["t"] / 60 for x in samples]
    a1.plot(minutes, [x["rss_mb"] for x in samples])
    a1.set_ylabel("RSS (MB)")
    a2.plot(minutes, [x["late_p99_ms"] for x in samples], lw=0.8)
    a2.set_ylabel("loop lateness p99 (ms)")
    a2.set_xlabel("session time (min)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return f"wrote {path}"


def plot_svg(samples: list[dict[str, Any]], path: Path) -> str:
    """The same plot as an SVG written by hand: no plotting library needed.

    Two panels over session minutes: RSS (MB), and the loop lateness p99 of each sample
    window (ms; absent from results written before samples carried it).
    """
    w, h, pad = 720, 190, 50
    t = [x["t"] / 60 for x in samples]
    tmax = max(t) or 1.0
    panels = [("RSS (MB)", [x["rss_mb"] for x in samples])]
    if all("late_p99_ms" in x for x in samples):
        panels.append(("loop lateness p99 per sample (ms)", [x["late_p99_ms"] or 0.0 for x in samples]))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h * len(panels) + 30}" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    for k, (label, ys) in enumerate(panels):
        y0 = k * h + 10
        lo, hi = min(ys), max(ys)
        span = (hi - lo) or 1.0

        def xy(tx: float, v: float, lo: float = lo, span: float = span, y0: int = y0) -> str:
            return f"{pad + (w - pad - 10) * tx / tmax:.1f},{y0 + (h - 40) * (1 - (v - lo) / span) + 10:.1f}"

        out.append(f'<rect x="{pad}" y="{y0 + 10}" width="{w - pad - 10}" height="{h - 40}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{pad}" y="{y0 + 6}">{label}: {lo:.1f} .. {hi:.1f}</text>')
        pts = " ".join(xy(tx, v) for tx, v in zip(t, ys, strict=True))
        out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{pts}"/>')
    out.append(f'<text x="{pad}" y="{h * len(panels) + 20}">session time (min), 0 .. {tmax:.1f}</text></svg>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return f"wrote {path}"


async def soak(cfg: Any, models: Any, minutes: float, every_s: float,
               session_dir: Path | None = None) -> tuple[Sampler, float]:
    utts = make_script(minutes)
    src = SimulatedUser(utts, UserVoice("piper", models.tts), realtime=False, max_wait_s=120.0)
    # One array per distinct line: the script repeats a few lines hundreds of times and
    # hundreds of copies of the same audio would be the soak's own baseline, not the agent's.
    shared: dict[tuple[str, float], np.ndarray] = {}
    src.clips = [shared.setdefault((u.text, u.gain_db), c) for u, c in zip(utts, src.clips, strict=True)]
    bus = EventBus()
    sampler = Sampler(every_s=every_s, end_s=minutes * 60.0, bus=bus)
    probe = asyncio.create_task(sampler.probe())
    t0 = time.monotonic()
    try:
        await run_conversation(cfg, models, src, subscribers=[sampler], bus=bus, keep_events=False,
                               session_dir=session_dir, on_engine=sampler.on_engine)
    finally:
        probe.cancel()
    wall = time.monotonic() - t0
    sampler.samples.append(sampler.sample())
    return sampler, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="session minutes to run (default 60)")
    ap.add_argument("--every", type=float, default=10.0, help="sample every N session-seconds (default 10)")
    ap.add_argument("--policy", default="rules", choices=("rules", "predictor", "smart-turn"))
    ap.add_argument("--record", action="store_true", help="keep recording on (off by default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=PLOT)
    ap.add_argument("--svg", type=Path, default=SVG)
    ap.add_argument("--replot", type=Path, help="only redraw the plots (SVG, and PNG with matplotlib) from a results JSON")
    ap.add_argument("--ort-arena", action="store_true",
                    help="piper with onnxruntime's memory arena (the build before it was turned off), for a before/after")
    args = ap.parse_args(argv)
    if args.replot is not None:
        samples = json.loads(args.replot.read_text())["samples"]
        print(plot(samples, args.plot))
        print(plot_svg(samples, args.svg))
        return 0
    overrides = [{"policy": {"name": args.policy}}]
    if not args.record:
        overrides.append({"recording": {"enabled": False}})
    cfg = load_config(None, overrides)
    tts_stage.ORT_ARENA = args.ort_arena
    models = load_models(cfg, make_policy)
    out = new_session_dir(cfg.recording.dir, "soak") if args.record else None
    sampler, wall = asyncio.run(soak(cfg, models, args.minutes, args.every, out))
    r = summarise(sampler, args.minutes, wall, args.policy)
    r["piper_ort_arena"] = args.ort_arena
    r["command"] = "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    print(plot(r["samples"], args.plot))
    print(plot_svg(r["samples"], args.svg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
