"""Echo benchmark: open speakers, echo cancellation off vs on, rule policy vs predictor.

One dry conversation is rendered once: the agent reads replies (piper), and during
them a user (piper, pitched and sped up, three variants) either barges in with a real
question, gives a backchannel ("mm-hmm", "yeah"...), or stays silent (agent-only
episodes). Each condition puts it in a simulated room (:mod:`duplex.audio.room`:
image-method RIRs from pyroomacoustics when installed, speaker soft clipping,
background noise) at an echo level relative to the user and a device delay, then runs
the capture path exactly as the engine does, frame by frame: the echo canceller (off,
or on as ``aec = "auto"`` builds it), the engine's listener (silero VAD, pocketsphinx
streaming ASR) and each turn policy, open loop (the agent does not actually stop).

Per room and echo level it reports:

* ERLE (dB): microphone power over cleaned power on agent-only episodes (includes the
  room noise, so at low echo levels it is bounded by the echo-to-noise ratio);
* self-interruptions per minute: barge-in decisions while the agent speaks and the
  user is silent (after a real barge-in is detected, the rest of that episode is
  ignored: the agent would have stopped);
* barge-in detection rate: barge-in episodes with a barge-in decision between the
  user's onset and 0.6 s after they stopped; its median reaction time;
* backchannel false-stop rate: backchannel episodes that got a barge-in decision;

for aec off and on side by side, one table per policy; plus the canceller's added
latency and per-frame cost. Goals (issue 7): 0 self-interruptions per minute up to
0 dB echo-to-user, barge-in detection >= 98 %, backchannel false stops <= 3 %, added
latency <= 10 ms per frame.

    python benchmarks/echo.py [--quick] [--rooms small,office,living] [--levels=-30,-10,0,6]
                              [--episodes 3,8,8] [--backend auto|hybrid|webrtc|speex]
                              [--policies rules,rules-geigel,predictor] [--out benchmarks/results/echo.json]

On 2 cores the default grid takes about an hour, most of it pocketsphinx decoding the
echo-filled microphone of the aec-off runs (cached in ``out/echo-bench-cache``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from duplex.audio.aec import make_aec  # noqa: E402
from duplex.audio.room import ROOMS, RoomSimulator, active_level_db  # noqa: E402
from duplex.audio.wav import resample  # noqa: E402
from duplex.config import AECConfig, ASRConfig, PolicyConfig, RulesConfig, VADConfig  # noqa: E402
from duplex.errors import DuplexError  # noqa: E402
from duplex.events import Decision  # noqa: E402
from duplex.turn import PolicyInput  # noqa: E402

log = logging.getLogger("benchmarks.echo")
F = FRAME_SAMPLES
FRAME_S = F / SAMPLE_RATE
CACHE = ROOT / "out" / "echo-bench-cache"
TAIL_S = 0.6
"""A barge-in decision up to this long after the user stopped still counts."""

AGENT_TEXTS = [
    "The tallest mountain in Europe is Mount Elbrus, in the Caucasus, at five thousand six hundred metres.",
    "It is a dormant volcano with two summits, and most climbers start from the southern side near the lifts.",
    "The best season to go is from June to September, when the weather on the mountain is the most stable.",
    "If you take the train from Moscow, the trip to the foothills takes about a day and a half.",
    "Most people need about a week to acclimatise before they try to reach the western summit.",
    "The view from the top covers the whole range, and on clear days you can see the Black Sea.",
    "A good pair of boots matters more than anything else, because the last slopes are icy and steep.",
    "Guides in the valley can rent you crampons, an ice axe and a warm jacket for a few dollars a day.",
    "The weather can change within an hour, so the guides always start the final climb before dawn.",
    "After the climb, the hot springs in the valley are the best place to rest for a day or two.",
]
BARGE_TEXTS = [
    "Wait, stop. What about the tallest mountain in Africa?",
    "Sorry, can you tell me how long the climb takes?",
    "Hold on, I have a different question for you.",
    "No, I meant the mountains in South America.",
    "Actually, tell me about the weather there in winter.",
    "Hang on, how much does a guide cost per day?",
    "Excuse me, is it dangerous for beginners?",
    "But what about the train tickets from the capital?",
]
BACKCHANNEL_TEXTS = ["mm-hmm", "yeah", "okay", "right", "uh-huh", "I see", "yes", "sure"]
USER_VOICES = ((19, 16), (21, 16), (17, 15))
"""Resampling ratios for the user: the agent's voice pitched up 2-3.5 semitones."""
DELAYS_MS = (10.0, 60.0, 120.0, 250.0)


# --- the dry conversation ---------------------------------------------------------------------


@dataclass
class Episode:
    kind: str  # none | barge_in | backchannel
    start: float  # reply start, s
    end: float  # reply end, s
    onset: float = 0.0  # user onset, s
    offset: float = 0.0  # user end, s
    text: str = ""


@dataclass
class Scene:
    agent: np.ndarray
    user: np.ndarray
    episodes: list[Episode] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.agent) / SAMPLE_RATE


_TTS: list = []


def _tts():
    """The packaged piper voice, loaded on first use (renders are cached on disk)."""
    if not _TTS:
        from duplex.config import load_config
        from duplex.stages.tts import PiperTTS

        c = load_config().tts
        _TTS.append(PiperTTS(c.voice, c.speed, c.noise_scale, c.noise_w))
    return _TTS[0]


def _render(text: str, voice: tuple[int, int] | None) -> np.ndarray:
    import hashlib

    key = hashlib.sha1(f"{text}|{voice}".encode()).hexdigest()[:16]
    path = CACHE / f"{key}.npy"
    if path.exists():
        return np.load(path)
    audio = np.concatenate(list(_tts().synthesize(text)))
    if voice is not None:
        audio = resample(audio, *voice)
    idx = np.flatnonzero(np.abs(audio) > 0.01)
    audio = audio[max(0, idx[0] - 160): idx[-1] + 800].astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, audio)
    return audio


def build_scene(n_none: int, n_barge: int, n_bc: int, seed: int = 7) -> Scene:
    """Agent replies back to back (1.2 s apart), each with one user event or none."""
    rng = np.random.default_rng(seed)
    kinds = ["none"] * n_none + ["barge_in"] * n_barge + ["backchannel"] * n_bc
    rng.shuffle(kinds)
    kinds = ["none", *kinds]  # the canceller's first reply is agent-only (initial convergence)
    agent_parts: list[np.ndarray] = []
    user_parts: list[tuple[int, np.ndarray]] = []
    episodes: list[Episode] = []
    t = 0.6
    for k, kind in enumerate(kinds):
        text = AGENT_TEXTS[k % len(AGENT_TEXTS)]
        reply = _render(text, None)
        ep = Episode(kind, t, t + len(reply) / SAMPLE_RATE)
        if kind != "none":
            bank = BARGE_TEXTS if kind == "barge_in" else BACKCHANNEL_TEXTS
            utt = bank[int(rng.integers(len(bank)))]
            voice = USER_VOICES[int(rng.integers(len(USER_VOICES)))]
            clip = _render(utt, voice) * float(10 ** (rng.uniform(-3, 3) / 20))
            onset = t + float(rng.uniform(0.8, max(0.9, len(reply) / SAMPLE_RATE - 2.0)))
            ep.onset, ep.offset, ep.text = onset, onset + len(clip) / SAMPLE_RATE, utt
            user_parts.append((int(onset * SAMPLE_RATE), clip))
        agent_parts.append((int(t * SAMPLE_RATE), reply))
        episodes.append(ep)
        t = max(ep.end, ep.offset) + 1.2
    n = int((t + 0.5) * SAMPLE_RATE) // F * F
    agent = np.zeros(n, np.float32)
    user = np.zeros(n, np.float32)
    for a, x in agent_parts:
        agent[a:a + len(x)] += x[: n - a]
    for a, x in user_parts:
        user[a:a + len(x)] += x[: n - a]
    return Scene(agent, user, episodes)


# --- one condition ---------------------------------------------------------------------------


def make_policies(names: list[str]) -> dict[str, object]:
    from policies import make_policy
    from policies.rules import RulePolicy

    out: dict[str, object] = {}
    for name in names:
        try:
            if name == "rules":
                out[name] = RulePolicy()
            elif name == "rules-geigel":
                out[name] = RulePolicy(RulesConfig(double_talk_gate=True))
            else:
                out[name] = make_policy(PolicyConfig(name=name))  # type: ignore[arg-type]
        except DuplexError as exc:
            log.warning("policy %s unavailable: %s", name, exc)
            out[name] = str(exc)
    return out


def cancel(mic: np.ndarray, ref: np.ndarray, backend: str = "auto") -> tuple[np.ndarray, dict]:
    aec = make_aec(AECConfig(mode=backend))
    assert aec is not None, "no echo canceller installed: pip install pywebrtc-audio"
    out = np.zeros_like(mic)
    cost = np.zeros(len(mic) // F)
    for i in range(len(mic) // F):
        sl = slice(i * F, (i + 1) * F)
        t0 = time.perf_counter()
        out[sl] = aec.process(mic[sl], ref[sl])
        cost[i] = time.perf_counter() - t0
    info = {"backend": aec.name, "latency_ms": 1000 * aec.latency_samples / SAMPLE_RATE,
            "delay_ms": aec.delay_ms, "realigned": aec.realigned, "tracked_erle_db": aec.erle_db,
            "cost_ms_mean": 1000 * float(cost.mean()), "cost_ms_p95": 1000 * float(np.percentile(cost, 95)),
            "cost_ms_max": 1000 * float(cost.max())}
    return out, info


def listen(mic: np.ndarray, listener) -> list:
    """The engine's listener over ``mic``, memoised on disk by content (ASR is the slow part)."""
    import hashlib
    import pickle

    key = hashlib.sha1(np.ascontiguousarray(mic, np.float32).tobytes()).hexdigest()[:24]
    path = CACHE / "listener" / f"{key}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)  # our own cache file, written below
    listener.reset()
    frames = [listener.step(mic[i * F:(i + 1) * F]) for i in range(len(mic) // F)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp"), "wb") as fh:
        pickle.dump(frames, fh, protocol=pickle.HIGHEST_PROTOCOL)
    path.with_suffix(".tmp").replace(path)
    return frames


def agent_timeline(scene: Scene, n: int) -> tuple[np.ndarray, np.ndarray]:
    speaking = np.zeros(n, bool)
    spoken = np.zeros(n, np.float32)
    for ep in scene.episodes:
        a, b = int(ep.start / FRAME_S), min(n, int(np.ceil(ep.end / FRAME_S)))
        speaking[a:b] = True
        spoken[a:b] = (np.arange(b - a) + 1) * FRAME_S
    return speaking, spoken


def run_policy(policy, scene: Scene, frames: list, mic: np.ndarray, raw: np.ndarray | None) -> list[tuple[float, Decision]]:
    policy.reset()
    n = len(frames)
    speaking, spoken = agent_timeline(scene, n)
    out = []
    for i, f in enumerate(frames):
        sl = slice(i * F, (i + 1) * F)
        x = PolicyInput(t=(i + 1) * FRAME_S, mic=mic[sl], playback=scene.agent[sl], vad=f.vad,
                        user_speaking=f.user_speaking, speech_run=f.speech_run, silence=f.silence,
                        agent_speaking=bool(speaking[i]), agent_spoken=float(spoken[i]), partial=f.partial,
                        user_turn_open=False, raw_mic=None if raw is None else raw[sl])
        d = policy.step(x).decision
        if d is not None:
            out.append((x.t, d))
    return out


def score(scene: Scene, decisions: list[tuple[float, Decision]]) -> dict:
    barges = [t for t, d in decisions if d is Decision.BARGE_IN]
    detected, n_barge, false_bc, n_bc, self_int = 0, 0, 0, 0, 0
    reactions: list[float] = []
    quiet_agent_s = 0.0
    for ep in scene.episodes:
        inside = [t for t in barges if ep.start <= t < ep.end + 0.5]
        if ep.kind == "none":
            self_int += len(inside)
            quiet_agent_s += ep.end - ep.start
            continue
        lo, hi = ep.onset - 0.05, ep.offset + TAIL_S
        hit = [t for t in inside if lo <= t <= hi]
        before = [t for t in inside if t < lo]
        quiet_agent_s += (ep.end - ep.start) - (min(hi, ep.end) - max(lo, ep.start))
        self_int += len(before)
        if ep.kind == "barge_in":
            n_barge += 1
            if hit:
                detected += 1
                reactions.append(hit[0] - ep.onset)
            else:  # not stopped by the user: anything after counts against the agent
                self_int += len([t for t in inside if t > hi])
        else:
            n_bc += 1
            false_bc += bool(hit)
            self_int += len([t for t in inside if t > hi])
    return {
        "self_interruptions": self_int,
        "agent_quiet_min": round(quiet_agent_s / 60, 3),
        "self_interruptions_per_min": round(self_int / max(quiet_agent_s / 60, 1e-9), 2),
        "barge_ins": n_barge, "barge_in_detected": detected,
        "barge_in_detection": round(detected / n_barge, 4) if n_barge else None,
        "barge_in_reaction_ms_p50": round(1000 * float(np.median(reactions)), 0) if reactions else None,
        "backchannels": n_bc, "backchannel_false_stops": false_bc,
        "backchannel_false_stop_rate": round(false_bc / n_bc, 4) if n_bc else None,
    }


def erle_on_agent_only(scene: Scene, mic: np.ndarray, out: np.ndarray, latency: int) -> float:
    out = np.concatenate([out[latency:], np.zeros(latency, np.float32)])
    num = den = 0.0
    for ep in scene.episodes[1:]:  # the first reply is the canceller's initial convergence
        if ep.kind != "none":
            continue
        sl = slice(int(ep.start * SAMPLE_RATE), int(ep.end * SAMPLE_RATE))
        num += float(np.sum(mic[sl].astype(np.float64) ** 2))
        den += float(np.sum(out[sl].astype(np.float64) ** 2))
    return round(10 * np.log10((num + 1e-12) / (den + 1e-12)), 1)


def run_condition(scene: Scene, room: str, level: float, delay: float, rir: str, listener, policies: dict,
                  backend: str = "auto") -> dict:
    rs = RoomSimulator(room, level, delay, method=rir, play_db=active_level_db(scene.agent),
                       user_db=active_level_db(scene.user), seed=int(delay))
    mic, echo, usr = rs.render(scene.user, scene.agent)
    res: dict = {"room": room, "echo_db": level, "delay_ms": delay,
                 "echo_to_user_measured_db": round(active_level_db(echo) - active_level_db(usr), 1),
                 "aec": {}}
    for mode in ("off", "on"):
        if mode == "on":
            cleaned, info = cancel(mic, scene.agent, backend)
            info["erle_db"] = erle_on_agent_only(scene, mic, cleaned, int(info["latency_ms"] * SAMPLE_RATE / 1000))
            raw = mic
        else:
            cleaned, info, raw = mic, {"erle_db": 0.0}, None
        frames = listen(cleaned, listener)
        per_policy = {}
        for name, pol in policies.items():
            if isinstance(pol, str):
                per_policy[name] = {"unavailable": pol}
                continue
            per_policy[name] = score(scene, run_policy(pol, scene, frames, cleaned, raw))
        res["aec"][mode] = {"canceller": info, "policies": per_policy}
    return res


# --- report -----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def format_tables(report: dict) -> str:
    lines: list[str] = []
    conds = report["conditions"]
    for name in report["policies"]:
        lines.append(f"\npolicy: {name}   (cells: aec off | aec on)")
        lines.append("| room | echo dB | delay ms | ERLE dB | self-int /min | barge-in det % | bc false-stop % | reaction ms |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in conds:
            off, on = c["aec"]["off"]["policies"][name], c["aec"]["on"]["policies"][name]
            if "unavailable" in off:
                lines.append(f"| {c['room']} | {c['echo_db']:+.0f} | {c['delay_ms']:.0f} | n/a: {off['unavailable'][:60]} |||||")
                continue
            lines.append(
                f"| {c['room']} | {c['echo_db']:+.0f} | {c['delay_ms']:.0f} | {c['aec']['on']['canceller']['erle_db']:.1f} "
                f"| {off['self_interruptions_per_min']:.1f} \\| {on['self_interruptions_per_min']:.1f} "
                f"| {_pct(off['barge_in_detection'])} \\| {_pct(on['barge_in_detection'])} "
                f"| {_pct(off['backchannel_false_stop_rate'])} \\| {_pct(on['backchannel_false_stop_rate'])} "
                f"| {off['barge_in_reaction_ms_p50'] or '-'} \\| {on['barge_in_reaction_ms_p50'] or '-'} |")
        s = report["summary"].get(name)
        if s:
            for scope in ("up_to_0db", "all"):
                a = s[scope]
                lines.append(
                    f"| **{scope.replace('_', ' ')}** | | | {a['erle_db_mean']:.1f} "
                    f"| {a['off']['self_interruptions_per_min']:.2f} \\| {a['on']['self_interruptions_per_min']:.2f} "
                    f"| {_pct(a['off']['barge_in_detection'])} \\| {_pct(a['on']['barge_in_detection'])} "
                    f"| {_pct(a['off']['backchannel_false_stop_rate'])} \\| {_pct(a['on']['backchannel_false_stop_rate'])} | |")
    lat = report["canceller"]
    lines.append(f"\ncanceller: {lat['backend']}, added latency {lat['latency_ms']:.0f} ms, cost per 32 ms frame "
                 f"mean {lat['cost_ms_mean']:.2f} ms, p95 {lat['cost_ms_p95']:.2f} ms, max {lat['cost_ms_max']:.1f} ms")
    return "\n".join(lines)


def summarise(conds: list[dict], policies: list[str]) -> dict:
    out: dict = {}
    for name in policies:
        blocks = {}
        for scope, keep in (("up_to_0db", lambda c: c["echo_db"] <= 0), ("all", lambda c: True)):
            sel = [c for c in conds if keep(c)]
            agg: dict = {"erle_db_mean": float(np.mean([c["aec"]["on"]["canceller"]["erle_db"] for c in sel])) if sel else 0.0}
            for mode in ("off", "on"):
                ps = [c["aec"][mode]["policies"][name] for c in sel]
                if not ps or any("unavailable" in p for p in ps):
                    return out
                si = sum(p["self_interruptions"] for p in ps)
                mins = sum(p["agent_quiet_min"] for p in ps)
                nb, db_ = sum(p["barge_ins"] for p in ps), sum(p["barge_in_detected"] for p in ps)
                nc, fc = sum(p["backchannels"] for p in ps), sum(p["backchannel_false_stops"] for p in ps)
                agg[mode] = {"self_interruptions_per_min": si / max(mins, 1e-9),
                             "barge_in_detection": db_ / nb if nb else None,
                             "backchannel_false_stop_rate": fc / nc if nc else None}
            blocks[scope] = agg
        out[name] = blocks
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", default="small,office,living")
    ap.add_argument("--levels", default="-30,-10,0,6", help="echo level relative to the user, dB")
    ap.add_argument("--policies", default="rules,rules-geigel,predictor")
    ap.add_argument("--episodes", default="3,8,8", help="agent-only, barge-in, backchannel episodes")
    ap.add_argument("--rir", default="auto", choices=("auto", "ism", "synthetic"))
    ap.add_argument("--backend", default="auto", help="echo canceller for 'aec on': auto, webrtc, speex")
    ap.add_argument("--quick", action="store_true", help="one room, two levels, few episodes (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "echo.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rooms = args.rooms.split(",")
    levels = [float(x) for x in args.levels.split(",")]
    counts = [int(x) for x in args.episodes.split(",")]
    if args.quick:
        rooms, levels, counts = rooms[:1], [0.0, 6.0], [2, 3, 3]
    for r in rooms:
        if r not in ROOMS:
            ap.error(f"unknown room {r!r} (known: {', '.join(ROOMS)})")
    names = args.policies.split(",")
    t0 = time.perf_counter()
    scene = build_scene(*counts)
    print(f"scene: {scene.duration / 60:.1f} min, {len(scene.episodes)} replies "
          f"({counts[0]} agent-only, {counts[1]} barge-ins, {counts[2]} backchannels)", flush=True)
    from policies.harness import make_listener

    listener = make_listener(asr=True)
    policies = make_policies(names)
    conds = []
    k = 0
    for room in rooms:
        for level in levels:
            delay = DELAYS_MS[k % len(DELAYS_MS)]
            k += 1
            c = run_condition(scene, room, level, delay, args.rir, listener, policies, args.backend)
            conds.append(c)
            on = c["aec"]["on"]
            print(f"  {room:7s} echo {level:+5.0f} dB delay {delay:3.0f} ms: ERLE {on['canceller']['erle_db']:5.1f} dB, "
                  f"delay est {on['canceller']['delay_ms']} ms  [{time.perf_counter() - t0:.0f} s]", flush=True)
    cost = [c["aec"]["on"]["canceller"] for c in conds]
    report = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor()},
        "rir": args.rir, "scene_minutes": round(scene.duration / 60, 2),
        "episodes": {"agent_only": counts[0] + 1, "barge_in": counts[1], "backchannel": counts[2]},
        "policies": names,
        "canceller": {"backend": cost[0]["backend"], "latency_ms": cost[0]["latency_ms"],
                      "cost_ms_mean": float(np.mean([c["cost_ms_mean"] for c in cost])),
                      "cost_ms_p95": float(np.max([c["cost_ms_p95"] for c in cost])),
                      "cost_ms_max": float(np.max([c["cost_ms_max"] for c in cost]))},
        "conditions": conds,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    report["summary"] = summarise(conds, names)
    print(format_tables(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"\nwrote {out} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
