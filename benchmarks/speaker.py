"""Speaker awareness on real speech: who is the user, and is that the agent's own echo?

    .venv/bin/python benchmarks/speaker.py [--quick] [--no-echo]

1. **Cost**: ms per embedding of a 0.4 / 0.8 / 1.6 s window on this CPU.
2. **User vs other** on the real multi-speaker recordings in ``../shared/realaudio``
   (validation only: nothing here is trained or tuned on them beyond reading the
   table): 02 (phone call, 2 speakers), 03/04 (AMI meeting, 2), 05 (TV debate, 4),
   06 (two talkers on separate channels). Each speaker is enrolled on the first 2, 5
   and 10 s of their speech that no one else talks over (RTTM; for 06 the silero VAD
   on each channel), and scored on held-out 0.4 / 0.8 / 1.6 s windows (hop 0.4 s) of
   every speaker's remaining clean speech: none overlaps any enrolment audio. The
   equal error rate pools all target and non-target trials of a recording (one
   threshold for all its speakers, as the gate has). Then the gate itself over whole
   speech runs (each held-out clean segment of 0.8 s or more, up to 3.2 s, fed frame by
   frame): how often the enrolled user is blocked (``other_speaker``) and how often
   another voice is blocked or let in as the user, at 0.8 s and at the end of the run.
3. **Agent echo**: the packaged piper voice (the agent) as the gate learns it at
   start-up, against (a) its own echo: other sentences through each simulated room
   (docs/echo.md: small/office/living at -10/0/+6 dB), raw and after the echo
   canceller, and (b) the real speakers of 2. Reported: the share of echo windows the
   gate calls ``agent``, and the share it would let through as the enrolled ``user``
   (each real speaker's 10 s profile in turn), and the agent-vs-real-speaker EER.
   (c) the user with the echo under them (raw, no canceller, at each level): the
   share of the user's windows still called ``user``.

Prints the tables and writes ``benchmarks/results/speaker.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from duplex.audio.wav import read_audio  # noqa: E402
from duplex.clock import PerfTimer  # noqa: E402
from duplex.stages.speaker import (  # noqa: E402
    AGENT_SENTENCES,
    SILENCE_DBFS,
    SpeakerGate,
    GateConfig,
    SpeakerEncoder,
    agent_profile,
    decide,
    length_adjustment,
    level_dbfs,
    profile_from_speech,
)

REAL = (ROOT / ".." / "shared" / "realaudio").resolve()
RESULTS = ROOT / "benchmarks" / "results" / "speaker.json"
ENROL_S = (2.0, 5.0, 10.0)
WINDOWS_S = (0.4, 0.8, 1.6)
HOP_S = 0.4
RECORDINGS = {
    "02 phone call": ("02_pyannote_sample_phonecall/sample_16k.wav", "02_pyannote_sample_phonecall/sample.rttm"),
    "03 AMI meeting": ("03_ami_meeting_dev00/dev00_16k.wav", "03_ami_meeting_dev00/dev00.rttm"),
    "04 AMI meeting": ("04_ami_meeting_dev01/dev01_16k.wav", "04_ami_meeting_dev01/dev01.rttm"),
    "05 TV debate": ("05_voxconverse_aepyx_debate/aepyx_16k.wav", "05_voxconverse_aepyx_debate/aepyx.rttm"),
    "06 two channels": ("06_fw_stereo_two_speakers/stereo_diarization_left_16k.wav",
                        "06_fw_stereo_two_speakers/stereo_diarization_right_16k.wav"),
}
ECHO_SENTENCES = (
    "The train to the city leaves every twenty minutes, and the last one is just before midnight.",
    "You could also try the small bakery on the corner; people say their bread is the best in town.",
    "Tomorrow will be cloudy in the morning with some sun later, and a high of about eighteen degrees.",
    "I have added milk, eggs and coffee to your shopping list. Is there anything else you need?",
)
ECHO_ROOMS = ("small", "office", "living")
ECHO_ENROL_S = 5.0
"""The echo part enrols each real speaker on 5 s (10 s leaves too little held-out speech in 30 s clips)."""
ECHO_DB = (-10.0, 0.0, 6.0)

Segments = list[tuple[float, float]]


# --- data ---------------------------------------------------------------------------------


def read_rttm(path: Path) -> dict[str, Segments]:
    out: dict[str, Segments] = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            out.setdefault(f[7], []).append((start, start + dur))
    return {k: sorted(v) for k, v in out.items()}


def subtract(segs: Segments, cut: Segments) -> Segments:
    """``segs`` minus the union of ``cut``."""
    out = []
    for s, e in segs:
        pieces = [(s, e)]
        for cs, ce in cut:
            nxt = []
            for ps, pe in pieces:
                if ce <= ps or cs >= pe:
                    nxt.append((ps, pe))
                    continue
                if cs > ps:
                    nxt.append((ps, cs))
                if ce < pe:
                    nxt.append((ce, pe))
            pieces = nxt
        out.extend(p for p in pieces if p[1] - p[0] > 1e-3)
    return out


def vad_segments(audio: np.ndarray, vad: object) -> Segments:
    probs = vad.probabilities(audio)  # type: ignore[attr-defined]
    segs, start = [], None
    f = FRAME_SAMPLES / SAMPLE_RATE
    for i, p in enumerate(list(probs) + [0.0]):
        if p >= 0.5 and start is None:
            start = i
        elif p < 0.5 and start is not None:
            segs.append((start * f, i * f))
            start = None
    return segs


def load_recording(name: str, vad: object) -> tuple[dict[str, np.ndarray], dict[str, Segments]]:
    """Per speaker: the audio their windows are cut from, and their clean speech segments."""
    a, b = RECORDINGS[name]
    if name.startswith("06"):
        left, right = read_audio(REAL / a), read_audio(REAL / b)
        return {"left": left, "right": right}, {"left": vad_segments(left, vad), "right": vad_segments(right, vad)}
    audio = read_audio(REAL / a)
    rttm = read_rttm(REAL / b)
    clean = {s: subtract(segs, [x for o, v in rttm.items() if o != s for x in v]) for s, segs in rttm.items()}
    return {s: audio for s in rttm}, clean


def take(segs: Segments, seconds: float) -> tuple[Segments, Segments]:
    """The first ``seconds`` of ``segs`` (in time order), and the rest."""
    first, rest, need = [], [], seconds
    for s, e in segs:
        if need <= 1e-9:
            rest.append((s, e))
        elif e - s <= need:
            first.append((s, e))
            need -= e - s
        else:
            first.append((s, s + need))
            rest.append((s + need, e))
            need = 0.0
    return first, rest


def cut(audio: np.ndarray, segs: Segments) -> np.ndarray:
    parts = [audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e in segs]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def windows(audio: np.ndarray, segs: Segments, win_s: float, hop_s: float = HOP_S) -> list[np.ndarray]:
    out = []
    w, h = int(win_s * SAMPLE_RATE), int(hop_s * SAMPLE_RATE)
    for s, e in segs:
        a, b = int(s * SAMPLE_RATE), int(e * SAMPLE_RATE)
        for k in range(a, b - w + 1, h):
            x = audio[k : k + w]
            if level_dbfs(x) > -55:
                out.append(x)
    return out


# --- metrics --------------------------------------------------------------------------------


def eer(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where it is reached."""
    if len(target) == 0 or len(nontarget) == 0:
        return float("nan"), float("nan")
    thr = np.unique(np.concatenate([target, nontarget]))
    frr = np.array([(target < t).mean() for t in thr])
    far = np.array([(nontarget >= t).mean() for t in thr])
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thr[i])


def cost(enc: SpeakerEncoder, reps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    out = {}
    for w in WINDOWS_S:
        x = (0.05 * rng.standard_normal(int(w * SAMPLE_RATE))).astype(np.float32)
        enc.embed(x)  # warm-up
        times = []
        for _ in range(reps):
            t0 = PerfTimer.now()
            enc.embed(x)
            times.append((PerfTimer.now() - t0) * 1000)
        out[f"{w:.1f}s"] = round(float(np.median(times)), 2)
    return out


# --- 2. user vs other -------------------------------------------------------------------------


MAX_WINDOWS = 80
"""Per speaker and window length, at most this many windows (evenly spaced) are scored."""


def spans(segs: Segments, win_s: float, hop_s: float = HOP_S) -> Segments:
    out = []
    for s, e in segs:
        k = s
        while k + win_s <= e + 1e-9:
            out.append((k, k + win_s))
            k += hop_s
    return out


def overlaps(span: tuple[float, float], segs: Segments) -> bool:
    return any(span[0] < e and s < span[1] for s, e in segs)


def run_level(enc: SpeakerEncoder, gate: GateConfig, name: str, enrol_s: float, audio: dict, clean: dict,
              profiles: dict, enrolled_at: dict) -> dict:
    """The gate over whole speech runs, as the engine would feed it: each held-out clean
    segment of 0.8 s or more (cut at 3.2 s) is one run, fed frame by frame to a gate with
    each enrolled profile as the user. Labels at the first verdict from 0.8 s of speech on
    ("early", when a barge-in is being decided) and at the end of the run."""
    counts = {k: {"user": 0, "other_speaker": 0, "unknown": 0, "agent": 0}
              for k in ("user_early", "user_end", "other_early", "other_end")}
    n_runs = {"user": 0, "other": 0}
    for spk, segs in clean.items():
        for s0, e0 in segs:
            if e0 - s0 < 0.8 or overlaps((s0, e0), enrolled_at[spk]):
                continue
            x = audio[spk][int(s0 * SAMPLE_RATE) : int(min(e0, s0 + 3.2) * SAMPLE_RATE)]
            for user, prof in profiles.items():
                who = "user" if spk == user else "other"
                g = SpeakerGate(enc, prof, None, gate)
                early = last = None
                for i in range(len(x) // FRAME_SAMPLES):
                    v = g.push(x[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], t=(i + 1) * FRAME_SAMPLES / SAMPLE_RATE)
                    if v is not None:
                        last = v
                        if early is None and v.window_s >= 0.8:
                            early = v
                if last is None:
                    continue
                n_runs[who] += 1
                counts[f"{who}_early"][(early or last).label] += 1
                counts[f"{who}_end"][last.label] += 1
    out = {"recording": name, "enrol_s": enrol_s, "user_runs": n_runs["user"], "other_runs": n_runs["other"]}
    for k, c in counts.items():
        n = n_runs[k.split("_")[0]]
        out[k] = {lab: round(v / n, 4) for lab, v in c.items()} if n else None
    fmt = lambda d, lab: "  –  " if d is None else f"{100 * d[lab]:5.1f}"  # noqa: E731
    print(f"{name:16s} enrol {enrol_s:4.0f} s  runs {n_runs['user']:3d} user / {n_runs['other']:3d} other   "
          f"user blocked (other_speaker) early/end {fmt(out['user_early'], 'other_speaker')}/"
          f"{fmt(out['user_end'], 'other_speaker')} %   other blocked early/end {fmt(out['other_early'], 'other_speaker')}/"
          f"{fmt(out['other_end'], 'other_speaker')} %   other let in as user early/end {fmt(out['other_early'], 'user')}/"
          f"{fmt(out['other_end'], 'user')} %", flush=True)
    return out


def user_vs_other(enc: SpeakerEncoder, vad: object, gate: GateConfig,
                  names: list[str]) -> tuple[list[dict], list[dict], dict]:
    rows, runs_rows, profiles10 = [], [], {}
    for name in names:
        audio, clean = load_recording(name, vad)
        # Every window is embedded once; each enrolment length then keeps the held-out ones.
        emb: dict[tuple[str, float], list[tuple[tuple[float, float], np.ndarray]]] = {}
        for spk, segs in clean.items():
            for win_s in WINDOWS_S:
                sp = [x for x in spans(segs, win_s)
                      if level_dbfs(audio[spk][int(x[0] * SAMPLE_RATE) : int(x[1] * SAMPLE_RATE)]) > -55]
                if len(sp) > MAX_WINDOWS:
                    sp = [sp[i] for i in np.linspace(0, len(sp) - 1, MAX_WINDOWS).round().astype(int)]
                emb[spk, win_s] = [(x, enc.embed(audio[spk][int(x[0] * SAMPLE_RATE) : int(x[1] * SAMPLE_RATE)]))
                                   for x in sp]
        for enrol_s in ENROL_S:
            profiles, enrolled_at, short = {}, {}, []
            for spk, segs in clean.items():
                total = sum(e - s for s, e in segs)
                first, rest = take(segs, enrol_s)
                enrolled_at[spk] = first
                if total < enrol_s + 0.4:  # nothing would be left to test on
                    short.append(f"{spk} has {total:.1f} s")
                    enrolled_at[spk] = []  # not enrolled: all its windows are non-targets for the others
                    continue
                profiles[spk] = profile_from_speech(enc, cut(audio[spk], first), "spk", min_speech_s=0.5)
            runs_rows.append(run_level(enc, gate, name, enrol_s, audio, clean, profiles, enrolled_at))
            if enrol_s == ECHO_ENROL_S:
                profiles10.update({f"{name}/{s}": (p, audio[s], take(clean[s], enrol_s)[1])
                                   for s, p in profiles.items()})
            for win_s in WINDOWS_S:
                held = {s: [e for x, e in emb[s, win_s] if not overlaps(x, enrolled_at[s])] for s in clean}
                tgt, non = [], []
                for user, prof in profiles.items():
                    for spk, es in held.items():
                        sims = [float(e @ prof.embedding) for e in es]
                        (tgt if spk == user else non).extend(sims)
                tgt_a, non_a = np.array(tgt), np.array(non)
                e, t = eer(tgt_a, non_a)
                shift = length_adjustment(win_s, gate)
                ta, na = tgt_a + shift, non_a + shift

                def share(x: np.ndarray) -> float:
                    return round(float(x.mean()), 4) if x.size else float("nan")

                rows.append({
                    "recording": name, "enrol_s": enrol_s, "window_s": win_s, "speakers_enrolled": len(profiles),
                    "speakers": len(clean), "too_short": short, "target_trials": len(tgt), "nontarget_trials": len(non),
                    "eer": round(e, 4), "eer_threshold": round(t, 4),
                    "target_mean": round(float(tgt_a.mean()), 4) if len(tgt_a) else None,
                    "nontarget_mean": round(float(non_a.mean()), 4) if len(non_a) else None,
                    # What the gate's thresholds make of single windows (1.6 s-equivalent similarity):
                    "user_called_user": share(ta >= gate.user_threshold),
                    "user_called_other": share(ta < gate.other_threshold),
                    "other_called_other": share(na < gate.other_threshold),
                    "other_called_user": share(na >= gate.user_threshold),
                })
                r = rows[-1]
                print(f"{name:16s} enrol {enrol_s:4.0f} s  win {win_s:.1f} s  spk {len(profiles)}/{len(clean)}  "
                      f"trials {len(tgt):4d}/{len(non):4d}  EER {100 * e:5.1f} % (thr {t:.3f})  gate: user->user "
                      f"{100 * r['user_called_user']:5.1f} %, user->other {100 * r['user_called_other']:5.1f} %, "
                      f"other->other {100 * r['other_called_other']:5.1f} %, other->user {100 * r['other_called_user']:5.1f} %"
                      + (f"  [too short: {', '.join(short)}]" if short else ""), flush=True)
    return rows, runs_rows, profiles10


# --- 3. agent echo ------------------------------------------------------------------------------


def agent_echo(enc: SpeakerEncoder, gate: GateConfig, profiles10: dict, quick: bool) -> dict:
    from duplex.audio.aec import make_aec
    from duplex.audio.room import RoomSimulator
    from duplex.config import AECConfig, load_config
    from duplex.stages.tts import PiperTTS

    tcfg = load_config(None).tts
    tts = PiperTTS(tcfg.voice, tcfg.speed, tcfg.noise_scale, tcfg.noise_w)
    t0 = PerfTimer.now()
    agent = agent_profile(enc, tts, AGENT_SENTENCES)
    startup_s = PerfTimer.now() - t0
    play = np.concatenate([np.concatenate(list(tts.synthesize(s))) for s in ECHO_SENTENCES]).astype(np.float32)
    play = np.concatenate([play, np.zeros(FRAME_SAMPLES * 4, np.float32)])
    n = len(play) // FRAME_SAMPLES * FRAME_SAMPLES
    play = play[:n]
    print(f"agent voice profile from {len(AGENT_SENTENCES)} sentences: {agent.speech_s:.1f} s, "
          f"{startup_s:.1f} s start-up (synthesis + embedding); echo material {n / SAMPLE_RATE:.1f} s", flush=True)

    users = list(profiles10.items())
    real_windows = []  # (profile key, held-out 1.6 s window) of the enrolled real speakers
    for key, (_, audio, held) in users:
        real_windows.extend((key, x) for x in windows(audio, held, 1.6, hop_s=0.8))
    print(f"echo part: {len(users)} real speakers enrolled on {ECHO_ENROL_S:.0f} s, "
          f"{len(real_windows)} held-out 1.6 s windows", flush=True)
    real_agent_sims = np.array([float(enc.embed(x) @ agent.embedding) for _, x in real_windows])

    rows = []
    rooms = ECHO_ROOMS[:1] if quick else ECHO_ROOMS
    for room in rooms:
        for echo_db in ECHO_DB:
            sim = RoomSimulator(room, echo_db, delay_ms=60.0, method="synthetic", seed=1)
            mic, echo, _ = sim.render(np.zeros(n, np.float32), play)
            aec = make_aec(AECConfig(mode="auto"))
            cleaned = np.zeros_like(mic)
            if aec is not None:
                for k in range(0, n, FRAME_SAMPLES):
                    cleaned[k : k + FRAME_SAMPLES] = aec.process(mic[k : k + FRAME_SAMPLES], play[k : k + FRAME_SAMPLES])
            for stage, sig in (("raw", mic), (f"after {aec.name if aec else 'no'} aec", cleaned)):
                # Skip the canceller's first 2 s (convergence); the gate only embeds what the VAD calls speech,
                # approximated here by windows within 25 dB of the loudest.
                start = 2 * SAMPLE_RATE if stage != "raw" else 0
                ws = [sig[k : k + int(1.6 * SAMPLE_RATE)] for k in range(start, n - int(1.6 * SAMPLE_RATE), int(0.4 * SAMPLE_RATE))]
                if not ws:
                    continue
                top = max(level_dbfs(w) for w in ws)
                ws = [w for w in ws if level_dbfs(w) > max(top - 25, SILENCE_DBFS)]
                if not ws:
                    rows.append({"room": room, "echo_db": echo_db, "stage": stage, "windows": 0,
                                 "level_dbfs": round(top, 1), "note": "below -60 dBFS: nothing to embed"})
                    print(f"echo {room:6s} {echo_db:+5.0f} dB {stage:20s} loudest window {top:6.1f} dBFS: "
                          f"below {SILENCE_DBFS:.0f} dBFS, the gate does not embed it", flush=True)
                    continue
                es = [enc.embed(w) for w in ws]
                sa = np.array([float(e @ agent.embedding) for e in es])
                called_agent = called_user = 0
                for e, a in zip(es, sa):
                    # Worst case over the enrolled users: the echo is let through if any real profile would call it "user".
                    su = max(float(e @ p.embedding) for _, (p, _, _) in users) if users else None
                    label, _ = decide(su, float(a), gate, agent_possible=True)
                    called_agent += label == "agent"
                    called_user += label == "user"
                e_, t_ = eer(sa, real_agent_sims)
                rows.append({"room": room, "echo_db": echo_db, "stage": stage, "windows": len(es),
                             "level_dbfs": round(float(np.median([level_dbfs(w) for w in ws])), 1),
                             "agent_sim_mean": round(float(sa.mean()), 4),
                             "called_agent": round(called_agent / len(es), 4),
                             "called_user_by_any_profile": round(called_user / len(es), 4),
                             "eer_agent_vs_real": round(e_, 4)})
                r = rows[-1]
                print(f"echo {room:6s} {echo_db:+5.0f} dB {stage:20s} windows {len(es):3d} level {r['level_dbfs']:6.1f} dBFS "
                      f"sim(agent) {r['agent_sim_mean']:.3f}  agent {100 * r['called_agent']:5.1f} %  "
                      f"user {100 * r['called_user_by_any_profile']:5.1f} %  EER vs real {100 * e_:5.1f} %", flush=True)

    # (c) the user talking over the raw echo: is the user still recognised (and not called the agent)?
    mixed = []
    rng = np.random.default_rng(3)
    picks = [real_windows[i] for i in rng.choice(len(real_windows), size=min(60, len(real_windows)), replace=False)]
    for echo_db in (-20.0, -10.0, 0.0, 6.0):
        called = {"user": 0, "agent": 0, "other_speaker": 0, "unknown": 0}
        for key, x in picks:
            prof = profiles10[key][0]
            k = int(rng.integers(0, n - len(x)))
            e_part = play[k : k + len(x)]
            g = 10 ** ((echo_db + level_dbfs(x) - level_dbfs(e_part)) / 20) if level_dbfs(e_part) > -80 else 0.0
            e = enc.embed(x + g * e_part)
            label, _ = decide(float(e @ prof.embedding), float(e @ agent.embedding), gate, agent_possible=True)
            called[label] += 1
        mixed.append({"echo_db": echo_db, "windows": len(picks), **{k: round(v / len(picks), 4) for k, v in called.items()}})
        print(f"user + raw echo at {echo_db:+5.0f} dB: user {100 * mixed[-1]['user']:5.1f} %  agent "
              f"{100 * mixed[-1]['agent']:5.1f} %  other {100 * mixed[-1]['other_speaker']:5.1f} %  "
              f"unknown {100 * mixed[-1]['unknown']:5.1f} %  ({len(picks)} windows of 1.6 s)", flush=True)
    return {"agent_profile": {"speech_s": agent.speech_s, "self_sim_mean": agent.self_sim_mean,
                              "startup_s": round(startup_s, 2)},
            "real_speakers_agent_sim_mean": round(float(real_agent_sims.mean()), 4),
            "real_speakers_agent_sim_max": round(float(real_agent_sims.max()), 4),
            "real_speakers_called_agent": round(float(np.mean(real_agent_sims >= gate.agent_threshold)), 4),
            "echo": rows, "user_over_echo": mixed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="02 and 06 only, one room")
    ap.add_argument("--no-echo", action="store_true", help="skip the agent-echo part (no piper needed)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    import torch

    from duplex.stages.vad import SileroVAD

    # One intra-op thread, as the gate would run beside the rest of the pipeline on 2 cores.
    torch.set_num_threads(1)
    enc, vad, gate = SpeakerEncoder(), SileroVAD(), GateConfig()
    ms = cost(enc, 10 if args.quick else 30)
    print(f"cost per embedding (median ms): {ms}", flush=True)
    names = ["02 phone call", "06 two channels"] if args.quick else list(RECORDINGS)
    rows, runs_rows, profiles10 = user_vs_other(enc, vad, gate, names)
    echo = None if args.no_echo else agent_echo(enc, gate, profiles10, args.quick)
    out = {
        "encoder": enc.id, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "ms_per_embedding": ms, "torch_threads": 1, "gate": asdict(gate), "enrol_s": ENROL_S, "windows_s": WINDOWS_S,
        "user_vs_other": rows, "gate_over_runs": runs_rows, "agent_echo": echo,
        "command": "python benchmarks/speaker.py" + (" --quick" if args.quick else "") + (" --no-echo" if args.no_echo else ""),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
