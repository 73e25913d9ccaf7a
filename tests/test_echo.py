"""Echo cancellation on simulated rooms: the agent must not hear (and stop) itself.

Rooms use the synthetic RIRs (deterministic, no pyroomacoustics needed); the agent's
voice is the packaged piper voice, the user's the same voice pitched up (simuser).
"""

from __future__ import annotations

import asyncio
import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.aec import AECError, EchoCanceller, available_backends, make_aec, make_backend
from duplex.audio.delay import DelayEstimator, estimate_delay
from duplex.audio.room import RoomSimulator, active_level_db
from duplex.config import AECConfig, ConfigError
from duplex.events import EchoDelay, event_from_dict

pytestmark = pytest.mark.skipif("webrtc" not in available_backends(), reason="pywebrtc-audio not installed")

AGENT_TEXT = ("The tallest mountain in Europe is Mount Elbrus, in the Caucasus. It is a dormant volcano with "
              "two summits, and climbers usually start from the southern side, near the ski lifts.")
F = FRAME_SAMPLES


def db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


@pytest.fixture(scope="module")
def agent(tts) -> np.ndarray:
    a = np.concatenate(list(tts.synthesize(AGENT_TEXT)))
    a = np.concatenate([a, a])  # ~20 s
    return a[: len(a) // F * F].astype(np.float32)


@pytest.fixture(scope="module")
def user(tts) -> np.ndarray:
    from duplex.simuser import UserVoice

    return UserVoice("piper", tts).render("Wait, stop. What about the highest mountain in Africa?")


def run_aec(aec: EchoCanceller, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Stream through the canceller; the output re-aligned with the input."""
    out = np.concatenate([aec.process(mic[k:k + F], ref[k:k + F]) for k in range(0, len(mic), F)])
    return np.concatenate([out[aec.latency_samples:], np.zeros(aec.latency_samples, np.float32)])


def webrtc(**kw) -> EchoCanceller:
    cfg = AECConfig(mode="webrtc", **kw)
    return EchoCanceller(make_backend("webrtc", cfg), cfg)


# --- the canceller ------------------------------------------------------------------------


@pytest.mark.parametrize("room,echo_db,delay_ms", [("small", 0.0, 30.0), ("living", 6.0, 180.0)])
def test_aec_removes_echo_in_a_simulated_room(agent, room, echo_db, delay_ms):
    rs = RoomSimulator(room, echo_db, delay_ms, method="synthetic", play_db=active_level_db(agent))
    mic, echo, _ = rs.render(np.zeros_like(agent), agent)
    aec = webrtc()
    out = run_aec(aec, mic, agent)
    settled = slice(3 * SAMPLE_RATE, len(mic))  # after the delay estimate and convergence
    erle = db(mic[settled]) - db(out[settled])
    assert erle >= 25.0, f"ERLE {erle:.1f} dB: the echo is not cancelled"
    assert abs(aec.delay_ms - delay_ms) <= 5.0, f"delay estimated {aec.delay_ms} ms, true {delay_ms} ms"
    assert aec.erle_db is not None and aec.erle_db >= 25.0


def double_talk(agent: np.ndarray, user: np.ndarray, at: int, room: str, echo_db: float,
                delay_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user speaks from sample ``at`` while the agent plays: (mic, echo, user) as heard."""
    near = np.zeros_like(agent)
    near[at:at + len(user)] = user
    rs = RoomSimulator(room, echo_db, delay_ms, method="synthetic", play_db=active_level_db(agent),
                       user_db=active_level_db(user))
    return rs.render(near, agent)


def test_user_speech_survives_double_talk(agent, user):
    at = 8 * SAMPLE_RATE
    mic, echo, usr = double_talk(agent, user, at, "office", 6.0, 100.0)
    out = run_aec(webrtc(), mic, agent)
    talk = slice(at, at + len(user))
    # Before: the echo is louder than the user; after: the user dominates by far.
    assert db(echo[talk]) > db(usr[talk])
    assert db(out[talk]) >= db(usr[talk]) - 6.0, "the canceller ate the user's voice"
    quiet = slice(4 * SAMPLE_RATE, at)
    assert db(out[quiet]) <= db(usr[talk]) - 25.0, "echo alone should end far below the user's level"


# --- alignment with the play cursor --------------------------------------------------------


def _stream(aec: EchoCanceller, rs: RoomSimulator, ref: np.ndarray, events: dict[int, tuple[str, int]]) -> np.ndarray:
    """Play ``ref`` through the room frame by frame, disturbing the device at given frames."""
    mic = np.zeros_like(ref)
    out = np.zeros_like(ref)
    for i, k in enumerate(range(0, len(ref), F)):
        if i in events:
            kind, n = events[i]
            getattr(rs, kind)(n)
        mic[k:k + F] = rs(np.zeros(F, np.float32), ref[k:k + F])
        out[k:k + F] = aec.process(mic[k:k + F], ref[k:k + F])
    lat = aec.latency_samples
    return mic, np.concatenate([out[lat:], np.zeros(lat, np.float32)])


@pytest.mark.parametrize("kind,n", [("drop", 2 * F + 200), ("underrun", 3 * F + 77)])
def test_alignment_recovers_after_device_flush_or_underrun(agent, kind, n):
    """A barge-in flush (the device discards queued audio, mid-chunk) shortens the echo
    delay; an underrun lengthens it. The estimator follows and the ERLE comes back."""
    ref = agent.copy()
    cut = 10 * SAMPLE_RATE // F  # frame of the disturbance
    ref[cut * F - 3 * F - 100: cut * F] = 0.0  # the reply was flushed mid-chunk just before
    rs = RoomSimulator("office", 0.0, 150.0, method="synthetic", play_db=active_level_db(agent))
    aec = webrtc()
    mic, out = _stream(aec, rs, ref, {cut: (kind, n)})
    before = slice(5 * SAMPLE_RATE, cut * F - 4 * F)
    after = slice(cut * F + 4 * SAMPLE_RATE, len(ref))
    assert db(mic[before]) - db(out[before]) >= 25.0
    new_delay = 150.0 + (n if kind == "underrun" else -n) * 1000 / SAMPLE_RATE
    assert abs(aec.delay_ms - new_delay) <= 5.0, f"delay {aec.delay_ms} ms, device now at {new_delay} ms"
    assert aec.realigned >= 1
    assert db(mic[after]) - db(out[after]) >= 25.0, "ERLE did not recover after re-alignment"


def test_lockstep_flush_keeps_cursor_alignment(agent):
    """In the engine the reference and the mic advance together (silence when idle), so a
    flushed reply (a part-voiced chunk, then silence) and a stall (silent chunks inside a
    reply) must not disturb the alignment: no re-estimation, full ERLE on the next reply."""
    ref = agent.copy()
    ref[6 * SAMPLE_RATE + 300: 8 * SAMPLE_RATE] = 0.0  # flush mid-chunk, 2 s of silence
    ref[12 * SAMPLE_RATE: 12 * SAMPLE_RATE + 6 * F] = 0.0  # underrun: 6 silent chunks
    rs = RoomSimulator("small", 3.0, 60.0, method="synthetic", play_db=active_level_db(agent))
    aec = webrtc()
    mic, out = _stream(aec, rs, ref, {})
    assert aec.realigned == 0
    assert abs(aec.delay_ms - 60.0) <= 5.0
    for a, b in [(8.5, 12.0), (12.5, 19.0)]:
        sl = slice(int(a * SAMPLE_RATE), int(b * SAMPLE_RATE))
        assert db(mic[sl]) - db(out[sl]) >= 25.0, f"ERLE low in {a}-{b} s"


def test_delay_estimator_one_shot_and_silence():
    rng = np.random.default_rng(3)
    ref = (rng.standard_normal(6 * SAMPLE_RATE // F * F) * 0.05).astype(np.float32)
    d = int(0.137 * SAMPLE_RATE)
    mic = np.concatenate([np.zeros(d, np.float32), 0.3 * ref[:-d]]) + 0.003 * rng.standard_normal(len(ref)).astype(np.float32)
    est = estimate_delay(mic, ref)
    assert est is not None and est.samples == d
    silent = DelayEstimator()
    for k in range(0, len(ref), F):
        assert silent.push(mic[k:k + F], np.zeros(F, np.float32)) is None  # nothing played: no guess


def test_fixed_delay_is_used_as_configured(agent):
    rs = RoomSimulator("small", 0.0, 80.0, method="synthetic", play_db=active_level_db(agent))
    mic, _, _ = rs.render(np.zeros_like(agent), agent)
    aec = webrtc(delay_ms=80)
    out = run_aec(aec, mic, agent)
    assert aec.estimator is None and aec.delay_ms == 80.0
    assert db(mic[SAMPLE_RATE:]) - db(out[SAMPLE_RATE:]) >= 25.0


# --- factory, reports, config -------------------------------------------------------------


def test_make_aec_modes(monkeypatch):
    assert make_aec(AECConfig(mode="off")) is None
    notes: list[str] = []
    aec = make_aec(AECConfig(mode="auto"), notice=notes.append)
    best = available_backends()[0]
    assert best in ("hybrid", "webrtc")
    assert aec is not None and aec.name == best and aec.latency_samples <= SAMPLE_RATE // 100
    assert notes and best in notes[0]
    import duplex.audio.aec as mod

    monkeypatch.setattr(mod, "available_backends", lambda: [])
    notes.clear()
    assert make_aec(AECConfig(mode="auto"), notice=notes.append) is None
    assert notes and "pip install pywebrtc-audio" in notes[0]
    monkeypatch.setattr(mod, "_load_speexdsp", lambda: None)
    with pytest.raises(AECError, match="libspeexdsp"):
        make_aec(AECConfig(mode="speex"))
    with pytest.raises(ConfigError, match="aec.mode"):
        AECConfig(mode="echoless")
    with pytest.raises(ConfigError, match="aec.delay_ms"):
        AECConfig(delay_ms=-5)


def test_poll_reports_delay_and_erle_as_events(agent):
    rs = RoomSimulator("small", 0.0, 40.0, method="synthetic", play_db=active_level_db(agent))
    mic, _, _ = rs.render(np.zeros_like(agent), agent)
    aec = webrtc(report_every_s=5.0)
    events = []
    for i, k in enumerate(range(0, len(mic), F)):
        aec.process(mic[k:k + F], agent[k:k + F])
        ev = aec.poll((i + 1) * F / SAMPLE_RATE)
        if ev is not None:
            events.append(ev)
    assert events, "no EchoDelay event"
    assert 1 <= len(events) <= 6, "reports must be news, not a stream"
    first = events[0]
    assert isinstance(first, EchoDelay) and first.backend == "webrtc" and abs(first.delay_ms - 40.0) <= 5.0
    assert events[-1].erle_db >= 25.0
    assert event_from_dict(first.to_dict()) == first


def test_streaming_cost_per_frame(agent):
    import time

    rs = RoomSimulator("office", 0.0, 100.0, method="synthetic")
    mic, _, _ = rs.render(np.zeros_like(agent), agent)
    aec = webrtc()
    cost = []
    for k in range(0, len(mic), F):
        t0 = time.perf_counter()
        aec.process(mic[k:k + F], agent[k:k + F])
        cost.append(time.perf_counter() - t0)
    assert np.median(cost) < 0.010, f"median {np.median(cost) * 1000:.1f} ms per 32 ms frame"



@pytest.mark.skipif("hybrid" not in available_backends(), reason="libspeexdsp not installed")
def test_hybrid_keeps_the_user_where_aec3_alone_chops_them(agent, user):
    """Double talk with echo as loud as the user: AEC3's suppressor drops much of the
    user's voice; the hybrid hands those blocks to Speex and keeps it, at the same ERLE."""
    at = 8 * SAMPLE_RATE
    mic, echo, usr = double_talk(agent, user, at, "small", 0.0, 60.0)

    def kept(name: str) -> tuple[float, float]:
        cfg = AECConfig(mode=name)
        out = run_aec(EchoCanceller(make_backend(name, cfg), cfg), mic, agent)
        fr = lambda x: 10 * np.log10(np.mean(np.square(x.reshape(-1, F), dtype=np.float64), axis=1) + 1e-12)  # noqa: E731
        u, o, e, m = fr(usr), fr(out), fr(echo), fr(mic)
        talk = (u > -35) & (e > -45)
        alone = (u < -60) & (e > -45)
        alone[: 3 * SAMPLE_RATE // F] = False
        return float(np.mean(o[talk] >= u[talk] - 10)), float(np.median(m[alone] - o[alone]))

    kept_webrtc, erle_webrtc = kept("webrtc")
    kept_hybrid, erle_hybrid = kept("hybrid")
    assert kept_hybrid >= 0.8 and kept_hybrid >= kept_webrtc + 0.2, (kept_hybrid, kept_webrtc)
    assert erle_hybrid >= 30.0 and erle_hybrid >= erle_webrtc - 6.0
