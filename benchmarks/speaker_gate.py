"""The speaker gate in the real engine, off vs on: other voices, echo residual, the user's barge-ins.

    .venv/bin/python benchmarks/speaker_gate.py [--quick] [--all-users] [--policies rules,predictor] [--out PATH]

Every case is one run of the real :class:`~duplex.engine.Engine` on the simulated clock
(VAD, pocketsphinx partials, the turn policy, the echo canceller, the speaker gate):
the agent reads a long sentence (the packaged piper voice) from t = 0 in a simulated
living room (``duplex.audio.room``, synthetic RIR, echo 0 dB, webrtc/hybrid canceller
on), and the near end holds, from ``ONSET_S`` on, one of:

* ``other_speaker``: another real talker of the same recording (the second person in
  the room, same microphone) at 0, -10 or -20 dB relative to the user's level;
* ``barge_in``: the enrolled user's held-out speech, alone or over a TV (a talker of
  another recording, from 0.5 s on, at -10 dB);
* ``echo``: nobody; the agent's own echo at -10/0/+6 dB with the canceller, and at 0 dB
  without it (what reaches the gate then is the raw echo).

Speech comes from ``../shared/realaudio`` (validation only: nothing is trained or tuned
on it): the AMI meeting excerpts 03 and 04 (the same two participants, MEE009 and
MEE012, so one is enrolled on 03 and tested on 04 too), the TV debate 05 (spk00,
spk01; spk02/spk03 are other voices) and the phone call 02. Each user is enrolled on
their first clean (un-overlapped, RTTM) speech, up to 10 s, and tested on later clean
segments only. Each case runs three times on the same frames: the gate off, on without
enrolment (``agent``: agent-voice rejection only) and on with the user enrolled
(``user+agent``), for each policy asked (default: the predictor, as configured).

Reported side by side: false barge-ins caused by other voices (and stops:
a pause or a barge-in), by echo residual, missed barge-ins of the enrolled user,
decision latency p50 (onset to the committed barge-in, and to the agent falling
silent), and the equal error rate of user vs other per recording for 2, 5 and 10 s
of enrolment (1.6 s held-out windows). Prints a table and writes
``benchmarks/results/speaker_gate.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.speaker import cut, eer, overlaps, read_rttm, subtract, take  # noqa: E402
from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from duplex.audio.aec import make_aec  # noqa: E402
from duplex.audio.room import RoomSimulator, active_level_db  # noqa: E402
from duplex.audio.source import ArraySource  # noqa: E402
from duplex.audio.wav import read_audio  # noqa: E402
from duplex.bus import EventBus  # noqa: E402
from duplex.clock import PerfTimer  # noqa: E402
from duplex.config import AECConfig, Config, load_config  # noqa: E402
from duplex.config import replace as replace_section  # noqa: E402
from duplex.engine import Engine  # noqa: E402
from duplex.events import AgentPaused, BargeIn, Event, OtherSpeaker, SpeakerHeard  # noqa: E402
from duplex.speaker_profiles import VoiceProfile  # noqa: E402
from duplex.stages.factory import Models  # noqa: E402
from duplex.stages.speaker import SpeakerEncoder, SpeakerGate, agent_profile, profile_from_speech  # noqa: E402
from policies import make_policy  # noqa: E402

REAL = (ROOT / ".." / "shared" / "realaudio").resolve()
RESULTS = ROOT / "benchmarks" / "results" / "speaker_gate.json"
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE

AGENT_TEXT = ("The tallest mountain in Europe is Mount Elbrus, in the Caucasus. It is a dormant volcano with two "
              "summits, and climbers usually start from the southern side.")
ONSET_S = 2.0
"""Near-end speech starts here (the canceller has converged)."""
TAIL_S = 1.0
"""A case ends this long after its near-end speech (a decision later than that is not one)."""
ECHO_CASE_S = 6.0
USER_DBFS = -20.0
"""Active level of the user's speech at the microphone (the room's nominal user level)."""
OTHER_REL_DB = (0.0, -10.0, -20.0)
TV_REL_DB = -10.0
ECHO_DB = (-10.0, 0.0, 6.0)
ENROL_S = (2.0, 5.0, 10.0)
ENGINE_ENROL_S = 10.0
"""The engine cases' enrolment (less when a speaker has too little clean speech)."""
SEG_MIN_S, SEG_MAX_S = 1.2, 2.4
ROOM, DELAY_MS = "living", 60.0

Span = tuple[int, float, float]
"""(file index within the pool, start s, end s)."""


# --- data --------------------------------------------------------------------------------------


@dataclass
class Pool:
    """One recording (or the two AMI excerpts of one meeting): its audio and who spoke when, clean."""

    name: str
    audio: list[np.ndarray]
    clean: dict[str, list[Span]]
    users: tuple[str, ...]

    def speech(self, spans: Sequence[Span]) -> np.ndarray:
        parts = [self.audio[f][int(s * SAMPLE_RATE): int(e * SAMPLE_RATE)] for f, s, e in spans]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


POOLS = {
    "03+04 AMI meeting": ((("03_ami_meeting_dev00/dev00_16k.wav", "03_ami_meeting_dev00/dev00.rttm"),
                           ("04_ami_meeting_dev01/dev01_16k.wav", "04_ami_meeting_dev01/dev01.rttm")),
                          ("MEE009", "MEE012")),
    "05 TV debate": ((("05_voxconverse_aepyx_debate/aepyx_16k.wav", "05_voxconverse_aepyx_debate/aepyx.rttm"),),
                     ("spk00", "spk01")),
    "02 phone call": ((("02_pyannote_sample_phonecall/sample_16k.wav", "02_pyannote_sample_phonecall/sample.rttm"),),
                      ("speaker90", "speaker91")),
}


def load_pool(name: str) -> Pool:
    files, users = POOLS[name]
    audio, clean = [], {}
    for k, (wav, rttm) in enumerate(files):
        audio.append(read_audio(REAL / wav))
        who = read_rttm(REAL / rttm)
        for spk, segs in who.items():
            others = [x for o, v in who.items() if o != spk for x in v]
            clean.setdefault(spk, []).extend((k, s, e) for s, e in subtract(segs, others))
    return Pool(name, audio, clean, users)


def split_spans(spans: Sequence[Span], seconds: float) -> tuple[list[Span], list[Span]]:
    """The first ``seconds`` of speech (in time order) and the rest."""
    first, rest = [], []
    for f in sorted({s[0] for s in spans}):
        mine = [(s, e) for g, s, e in spans if g == f]
        a, b = take(mine, seconds - sum(e - s for _, s, e in first))
        first += [(f, s, e) for s, e in a]
        rest += [(f, s, e) for s, e in b]
    return first, rest


def test_segments(spans: Sequence[Span], n: int) -> list[Span]:
    """Up to ``n`` held-out pieces of SEG_MIN_S..SEG_MAX_S, spread over the spans."""
    pieces = [(f, s, min(e, s + SEG_MAX_S)) for f, s, e in spans if e - s >= SEG_MIN_S]
    if len(pieces) <= n:
        return pieces
    return [pieces[i] for i in np.linspace(0, len(pieces) - 1, n).round().astype(int)]


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** ((dbfs - active_level_db(x)) / 20)).astype(np.float32)


# --- the engine's stand-ins for what a case does not exercise ------------------------------------


class CannedLLM:
    """The reply after a barge-in (a case ends soon after; nothing here is about the LLM)."""

    def warmup(self) -> None:
        pass

    def stream(self, messages: Sequence[Mapping[str, str]], cancel: threading.Event) -> Iterator[str]:
        yield "Okay."


class CachedTTS:
    """The packaged piper voice, each text synthesised once for all cases."""

    def __init__(self, tts: object) -> None:
        self.tts = tts
        self.name = getattr(tts, "name", "tts")
        self._cache: dict[str, list[np.ndarray]] = {}

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        if text not in self._cache:
            self._cache[text] = [np.asarray(a, np.float32) for a in self.tts.synthesize(text)]  # type: ignore[attr-defined]
        yield from self._cache[text]


# --- one case ----------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str  # other_speaker, barge_in, echo
    pool: str
    user: str | None
    near: np.ndarray
    speech_s: float
    echo_db: float = -10.0
    """The agent's echo at the microphone relative to the user's level (issue 7's quietest)."""
    aec: bool = True
    level_db: float = 0.0
    tv: bool = False
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def group(self) -> str:
        if self.kind == "other_speaker":
            return f"other voice {self.level_db:+.0f} dB"
        if self.kind == "barge_in":
            return f"user barge-in{' over TV -10 dB' if self.tv else ''}"
        return f"echo {self.echo_db:+.0f} dB {'aec' if self.aec else 'no aec'}"


def run_case(case: Case, cfg: Config, base: Models, gate: SpeakerGate | None) -> dict:
    cfg = replace_section(cfg, "speaker", enabled=gate is not None)
    models = Models(base.vad, base.asr, base.llm, base.tts, base.backchannel_clip, None, gate)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    aec = make_aec(AECConfig(mode="auto")) if case.aec else None
    engine = Engine(cfg, models, make_policy(cfg.policy), ArraySource(case.near, name=case.kind), bus=bus, aec=aec)
    engine.add_mic_filter(RoomSimulator(ROOM, case.echo_db, DELAY_MS, method="synthetic", seed=1))
    engine.say(AGENT_TEXT)
    # Nothing after the near-end signal is scored: stop there instead of draining the reply.
    end_s = len(case.near) / SAMPLE_RATE
    engine.add_tap(lambda t, mic, played: engine.end("case over") if t >= end_s - FRAME_S - 1e-9 else None)
    t0 = PerfTimer.now()
    asyncio.run(engine.run())
    wall = PerfTimer.now() - t0
    lo, hi = ONSET_S - 0.1, ONSET_S + case.speech_s + TAIL_S
    if case.kind == "echo":
        lo, hi = 0.0, end_s
    barges = [e for e in events if isinstance(e, BargeIn) and lo <= e.t <= hi]
    pauses = [e for e in events if isinstance(e, AgentPaused) and lo <= e.t <= hi]
    early = [e for e in events if isinstance(e, BargeIn) and e.t < lo]
    stop_t = min([e.t for e in barges[:1] + pauses[:1]], default=None)
    return {
        "barge_in": bool(barges), "stopped": stop_t is not None, "barge_in_before_onset": bool(early),
        "commit_ms": round((barges[0].t - ONSET_S) * 1000, 1) if barges and case.kind == "barge_in" else None,
        "silent_ms": round((stop_t - ONSET_S) * 1000, 1) if stop_t is not None and case.kind == "barge_in" else None,
        "other_speaker_events": [(e.label, e.suppressed) for e in events if isinstance(e, OtherSpeaker)],
        "labels": sorted({e.label for e in events if isinstance(e, SpeakerHeard)}),
        "embeddings": sum(isinstance(e, SpeakerHeard) for e in events),
        "last_verdict": next(({"label": e.label, "sim_user": e.sim_user, "sim_agent": e.sim_agent, "window_s": e.window}
                              for e in reversed(events) if isinstance(e, SpeakerHeard) and lo <= e.t <= hi), None),
        "wall_s": round(wall, 2),
    }


# --- building the cases ------------------------------------------------------------------------


def build_cases(pools: dict[str, Pool], enc: SpeakerEncoder, quick: bool,
                all_users: bool) -> tuple[list[Case], dict]:
    per_user_other = 1
    per_user_barge = 1
    cases: list[Case] = []
    profiles: dict[str, tuple[str, VoiceProfile]] = {}
    enrol_info = {}
    names = list(pools)
    for pname, pool in pools.items():
        tv_pool = pools[names[(names.index(pname) + 1) % len(names)]]
        tv_spk = max(tv_pool.clean, key=lambda s: sum(e - b for _, b, e in tv_pool.clean[s]))
        tv = at_level(tv_pool.speech(tv_pool.clean[tv_spk])[: int((ONSET_S + SEG_MAX_S + TAIL_S) * SAMPLE_RATE)],
                      USER_DBFS + TV_REL_DB)
        for user in pool.users[: None if all_users else 1]:
            spans = sorted(pool.clean[user])
            total = sum(e - s for _, s, e in spans)
            enrol_s = min(ENGINE_ENROL_S, total - 2 * SEG_MIN_S)
            first, rest = split_spans(spans, enrol_s)
            prof = profile_from_speech(enc, pool.speech(first), "user", source=f"{pname}/{user}", min_speech_s=2.0)
            key = f"{pname}/{user}"
            profiles[key] = (pname, prof)
            enrol_info[key] = {"enrol_s": round(enrol_s, 2), "held_out_s": round(total - enrol_s, 2)}
            for f, s, e in test_segments(rest, per_user_barge):
                x = at_level(pool.speech([(f, s, e)]), USER_DBFS)
                for with_tv in (False, True):
                    near = np.zeros(int((ONSET_S + len(x) / SAMPLE_RATE + TAIL_S) * SAMPLE_RATE), np.float32)
                    a = int(ONSET_S * SAMPLE_RATE)
                    near[a: a + len(x)] += x
                    if with_tv:
                        b = int(0.5 * SAMPLE_RATE)
                        near[b: b + len(tv)] += tv[: len(near) - b]
                    cases.append(Case("barge_in", pname, key, near, len(x) / SAMPLE_RATE, tv=with_tv))
            others = [o for o in pool.clean if o != user]
            other_spans = sorted(sp for o in others for sp in pool.clean[o])
            for f, s, e in test_segments(other_spans, per_user_other):
                raw = pool.speech([(f, s, e)])
                for rel in OTHER_REL_DB[: 2 if quick else None]:
                    x = at_level(raw, USER_DBFS + rel)
                    near = np.zeros(int((ONSET_S + len(x) / SAMPLE_RATE + TAIL_S) * SAMPLE_RATE), np.float32)
                    a = int(ONSET_S * SAMPLE_RATE)
                    near[a: a + len(x)] += x
                    cases.append(Case("other_speaker", pname, key, near, len(x) / SAMPLE_RATE, level_db=rel))
    silence = np.zeros(int(ECHO_CASE_S * SAMPLE_RATE), np.float32)
    for echo_db in ECHO_DB[1:2] if quick else ECHO_DB:
        cases.append(Case("echo", "-", None, silence, 0.0, echo_db=echo_db, aec=True))
    cases.append(Case("echo", "-", None, silence, 0.0, echo_db=0.0, aec=False))
    return cases, {"profiles": profiles, "enrolment": enrol_info}


def eer_table(pools: dict[str, Pool], enc: SpeakerEncoder) -> list[dict]:
    """User vs other on held-out 1.6 s windows, per recording and enrolment length."""
    rows = []
    for pname, pool in pools.items():
        wins: dict[str, list[tuple[Span, np.ndarray]]] = {}
        for spk, spans in pool.clean.items():
            out = []
            for f, s, e in spans:
                k = s
                while k + 1.6 <= e + 1e-9:
                    out.append(((f, k, k + 1.6), enc.embed(pool.speech([(f, k, k + 1.6)]))))
                    k += 0.8
            wins[spk] = out
        for enrol_s in ENROL_S:
            tgt, non, n_users = [], [], 0
            for user in pool.users:
                total = sum(e - s for _, s, e in pool.clean[user])
                if total < enrol_s + 1.6:
                    continue
                first, _ = split_spans(sorted(pool.clean[user]), enrol_s)
                prof = profile_from_speech(enc, pool.speech(first), "u", min_speech_s=1.0)
                n_users += 1
                for spk, ws in wins.items():
                    for (f, s, e), emb in ws:
                        if spk == user and overlaps((s, e), [(b, c) for g, b, c in first if g == f]):
                            continue
                        (tgt if spk == user else non).append(float(emb @ prof.embedding))
            er, thr = eer(np.array(tgt), np.array(non))
            rows.append({"recording": pname, "enrol_s": enrol_s, "users": n_users, "target_trials": len(tgt),
                         "nontarget_trials": len(non), "eer": None if np.isnan(er) else round(er, 4),
                         "eer_threshold": None if np.isnan(thr) else round(thr, 4)})
    return rows


# --- the report --------------------------------------------------------------------------------


def _share(xs: list[bool]) -> float | None:
    return round(float(np.mean(xs)), 4) if xs else None


def _p50(xs: list[float]) -> float | None:
    return round(float(np.median(xs)), 1) if xs else None


MODES = ("off", "agent", "user+agent")
"""Gate off; on without enrolment (agent-voice rejection only); on with the user enrolled."""


def summarise(cases: list[Case], policy: str) -> dict:
    out: dict[str, dict] = {}
    for mode in MODES:
        key = f"{policy}/{mode}"
        res = lambda kind: [c.results[key] for c in cases if c.kind == kind]  # noqa: E731
        other, barge, echo = res("other_speaker"), res("barge_in"), res("echo")
        echo_aec = [c.results[key] for c in cases if c.kind == "echo" and c.aec]
        out[mode] = {
            "false_barge_in_other_voices": _share([r["barge_in"] for r in other]),
            "stopped_by_other_voices": _share([r["stopped"] for r in other]),
            "false_barge_in_echo_residual": _share([r["barge_in"] for r in echo_aec]),
            "false_barge_in_echo_all": _share([r["barge_in"] for r in echo]),
            "missed_user_barge_in": _share([not r["barge_in"] for r in barge]),
            "missed_user_barge_in_count": sum(not r["barge_in"] for r in barge),
            "commit_ms_p50": _p50([r["commit_ms"] for r in barge if r["commit_ms"] is not None]),
            "silent_ms_p50": _p50([r["silent_ms"] for r in barge if r["silent_ms"] is not None]),
            "cases": {"other_speaker": len(other), "barge_in": len(barge), "echo": len(echo)},
        }
    groups: dict[str, dict] = {}
    for c in cases:
        g = groups.setdefault(c.group, {"n": 0, **{m: [] for m in MODES}})
        g["n"] += 1
        for mode in MODES:
            r = c.results[f"{policy}/{mode}"]
            g[mode].append(not r["barge_in"] if c.kind == "barge_in" else r["barge_in"])
    out["groups"] = {k: {"n": v["n"], "metric": "missed" if k.startswith("user") else "false barge-in",
                         **{m: _share(v[m]) for m in MODES}} for k, v in groups.items()}
    return out


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def print_table(policy: str, summary: dict) -> None:
    cols = [summary[m] for m in MODES]
    head = " | ".join(f"gate {m}" for m in MODES)
    print(f"\npolicy {policy}:\n\n| metric | {head} |\n| --- |" + " ---: |" * len(MODES))
    rows = [
        ("false barge-ins by other voices", lambda s: pct(s["false_barge_in_other_voices"])),
        ("  other voices that stop/pause the agent", lambda s: pct(s["stopped_by_other_voices"])),
        ("false barge-ins by echo residual (aec)", lambda s: pct(s["false_barge_in_echo_residual"])),
        ("  by echo, aec cases + raw echo", lambda s: pct(s["false_barge_in_echo_all"])),
        ("missed barge-ins, enrolled user", lambda s: f"{pct(s['missed_user_barge_in'])} ({s['missed_user_barge_in_count']})"),
        ("barge-in commit p50 ms (from onset)", lambda s: f"{s['commit_ms_p50']}"),
        ("agent silent p50 ms (pause or commit)", lambda s: f"{s['silent_ms_p50']}"),
    ]
    for name, f in rows:
        print(f"| {name} | " + " | ".join(f(s) for s in cols) + " |")
    print(f"\n| case group | n | metric | {head} |\n| --- | ---: | --- |" + " ---: |" * len(MODES))
    for k, v in summary["groups"].items():
        print(f"| {k} | {v['n']} | {v['metric']} | " + " | ".join(pct(v[m]) for m in MODES) + " |")


def print_eer(eers: list[dict]) -> None:
    print("\n| recording | enrolment | users | trials t/n | EER (1.6 s windows) |\n| --- | ---: | ---: | ---: | ---: |")
    for r in eers:
        print(f"| {r['recording']} | {r['enrol_s']:.0f} s | {r['users']} | {r['target_trials']}/{r['nontarget_trials']} "
              f"| {pct(r['eer'])} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer levels and echo cases")
    ap.add_argument("--all-users", action="store_true",
                    help="every user of each recording (2 each) instead of the first: twice the cases")
    ap.add_argument("--policies", default="predictor",
                    help="turn policies, comma-separated (default: predictor, the default profile's; "
                         "rules,predictor for both)")
    ap.add_argument("--hold", choices=("play", "pause", "off"), default=None,
                    help="speaker.hold_barge_in for the gated runs (default: the config's)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    import torch

    from duplex.stages.asr import PocketSphinxASR
    from duplex.stages.factory import make_tts
    from duplex.stages.vad import SileroVAD

    torch.set_num_threads(1)  # the gate beside the rest of the pipeline, one core
    t_start = PerfTimer.now()
    # Pocketsphinx partials (what the predictor was trained on); the Whisper finals of the
    # default profile only change the reply's words, which no case here looks at.
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    cfg = load_config(None, [{"asr": {"backend": "pocketsphinx"}},
                             {"speaker": {"hold_barge_in": args.hold}} if args.hold else {}])
    enc = SpeakerEncoder()
    tts = CachedTTS(make_tts(cfg.tts))
    clip = np.concatenate(list(tts.synthesize("Mm-hmm.")))
    base = Models(SileroVAD(), PocketSphinxASR(), CannedLLM(), tts, clip, None)  # type: ignore[arg-type]
    agent = agent_profile(enc, tts)
    pools = {name: load_pool(name) for name in POOLS}
    eers = eer_table(pools, enc)
    cases, info = build_cases(pools, enc, args.quick, args.all_users)
    print(f"{len(cases)} cases ({sum(c.kind == 'other_speaker' for c in cases)} other voice, "
          f"{sum(c.kind == 'barge_in' for c in cases)} user barge-in, {sum(c.kind == 'echo' for c in cases)} echo); "
          f"agent voice {agent.speech_s:.1f} s", flush=True)
    for i, c in enumerate(cases):
        user = info["profiles"][c.user][1] if c.user else None
        line = f"[{i + 1:3d}/{len(cases)}] {c.pool:18s} {c.user or '-':28s} {c.group:28s}"
        for pol in policies:
            pcfg = replace_section(cfg, "policy", name=pol)
            gates = {"off": None, "agent": SpeakerGate(enc, None, agent, cfg.speaker),
                     "user+agent": SpeakerGate(enc, user, agent, cfg.speaker)}
            for mode in MODES:
                c.results[f"{pol}/{mode}"] = on = run_case(c, pcfg, base, gates[mode])
            line += f"  {pol}: barge-in " + "/".join(str(int(c.results[f'{pol}/{m}']['barge_in'])) for m in MODES)
        print(line + f"  heard {','.join(on['labels']) or '-'}", flush=True)
    summaries = {pol: summarise(cases, pol) for pol in policies}
    for pol, summary in summaries.items():
        print_table(pol, summary)
    print_eer(eers)
    wall = PerfTimer.now() - t_start
    out = {
        "command": "python benchmarks/speaker_gate.py" + (" --quick" if args.quick else "")
                   + (" --all-users" if args.all_users else "")
                   + (f" --policies {args.policies}" if args.policies != "predictor" else "")
                   + (f" --hold {args.hold}" if args.hold else ""),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch_threads": 1,
        "wall_s": round(wall, 1), "policies": policies, "gate": asdict(cfg.speaker),
        "room": {"room": ROOM, "delay_ms": DELAY_MS, "user_dbfs": USER_DBFS}, "onset_s": ONSET_S,
        "agent_profile_s": agent.speech_s, "enrolment": info["enrolment"],
        "summary": summaries, "eer": eers,
        "cases": [{"kind": c.kind, "pool": c.pool, "user": c.user, "group": c.group, "speech_s": round(c.speech_s, 2),
                   "results": c.results} for c in cases],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"\n{wall:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
