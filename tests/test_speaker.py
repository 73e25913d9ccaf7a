"""Speaker awareness: the GE2E encoder on real speech, the gate, profiles, ``duplex enroll``."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.errors import AudioError, ConfigError, SpeakerError
from duplex.speaker_profiles import ProfileStore, VoiceProfile, check_name
from duplex.stages.speaker import (
    GateConfig,
    SpeakerEncoder,
    SpeakerGate,
    agent_profile,
    cosine,
    decide,
    mel_filterbank,
    mel_frames,
    profile_from_speech,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "realaudio"
PHONE = SHARED / "02_pyannote_sample_phonecall" / "sample_16k.wav"
STEREO = SHARED / "06_fw_stereo_two_speakers"
BOOK = SHARED / "08_librivox_sense_sensibility_0870" / "sense_and_sensibility_01_austen_64kb-0870_16k.wav"
BOOK2 = SHARED / "09_librivox_sense_sensibility_0920" / "sense_and_sensibility_01_austen_64kb-0920_16k.wav"
JFK = SHARED / "01_jfk_ask_not" / "jfk_16k.wav"

needs_real = pytest.mark.skipif(not PHONE.exists(), reason="../shared/realaudio not present")


def sec(audio: np.ndarray, a: float, b: float) -> np.ndarray:
    return audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]


@pytest.fixture(scope="module")
def enc() -> SpeakerEncoder:
    return SpeakerEncoder()


@pytest.fixture(scope="module")
def phone():
    """02: Diane and Sheila (times from the STM transcript), enrolment and held-out audio apart."""
    from duplex.audio.wav import read_audio

    a = read_audio(PHONE)
    diane_enrol = np.concatenate([sec(a, 12.55, 14.18), sec(a, 17.79, 18.14), sec(a, 18.6, 21.47)])
    sheila_enrol = np.concatenate([sec(a, 14.75, 17.76), sec(a, 21.94, 23.97)])
    return {
        "diane_enrol": diane_enrol,
        "sheila_enrol": sheila_enrol,
        "diane_test": [sec(a, 10.78, 12.4), sec(a, 28.5, 29.98)],
        "sheila_test": [sec(a, 24.06, 25.66), sec(a, 25.9, 27.5)],
    }


# --- front end -----------------------------------------------------------------------------


def test_mel_filterbank_is_slaney_normalised_triangles():
    fb = mel_filterbank()
    assert fb.shape == (40, 201)
    assert (fb >= 0).all()
    # Each band peaks once, and band centres rise with the band index.
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]
    # Slaney normalisation: equal area per band (up to the FFT grid), so narrow low bands are taller.
    assert fb[0].max() > fb[-1].max()


def test_mel_frames_put_a_tone_in_its_band():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = mel_frames((0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    high = mel_frames((0.1 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32))
    assert low.shape == (101, 40)  # 10 ms hop, centred frames
    assert low.mean(axis=0).argmax() < high.mean(axis=0).argmax()


# --- the encoder on real speech ------------------------------------------------------------------


@needs_real
def test_embedding_is_unit_norm_and_level_invariant(enc, phone):
    x = phone["sheila_test"][0]
    e = enc.embed(x)
    assert e.shape == (256,) and e.dtype == np.float32
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-4 and (e >= 0).all()
    # The window is normalised to -30 dBFS first: a quieter microphone gives the same voice.
    assert cosine(e, enc.embed(0.1 * x)) > 0.999


def test_silent_or_tiny_window_is_an_error(enc):
    with pytest.raises(SpeakerError, match="silent"):
        enc.embed(np.zeros(SAMPLE_RATE, np.float32))
    with pytest.raises(SpeakerError, match="too short"):
        enc.embed(np.full(400, 0.1, np.float32))


@needs_real
def test_same_speaker_is_closer_than_other_speaker_on_two_channels(enc):
    from duplex.audio.wav import read_audio

    left = read_audio(STEREO / "stereo_diarization_left_16k.wav")
    right = read_audio(STEREO / "stereo_diarization_right_16k.wav")
    l1, l2 = enc.embed(sec(left, 0.2, 1.8)), enc.embed(sec(left, 2.6, 4.2))
    r = enc.embed(sec(right, 0.5, 2.1))
    same = cosine(l1, l2)
    assert same > cosine(l1, r) + 0.05, (same, cosine(l1, r))
    assert same > cosine(l2, r) + 0.05, (same, cosine(l2, r))


@needs_real
def test_held_out_phone_windows_match_their_own_speaker(enc, phone):
    diane = profile_from_speech(enc, phone["diane_enrol"], "diane")
    sheila = profile_from_speech(enc, phone["sheila_enrol"], "sheila")
    assert 4.5 < diane.speech_s < 5.5 and diane.n_windows >= 4
    for x in phone["diane_test"]:
        e = enc.embed(x)
        assert cosine(e, diane.embedding) > cosine(e, sheila.embedding)
    for x in phone["sheila_test"]:
        e = enc.embed(x)
        assert cosine(e, sheila.embedding) > cosine(e, diane.embedding)


def test_too_little_speech_to_enrol(enc):
    rng = np.random.default_rng(0)
    with pytest.raises(SpeakerError, match="only 1.0 s of speech"):
        profile_from_speech(enc, (0.05 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32), "x")


# --- the gate --------------------------------------------------------------------------------------


def test_decide_rules():
    cfg = GateConfig(user_threshold=0.75, other_threshold=0.65, agent_threshold=0.7, margin=0.03)
    assert decide(0.85, 0.5, cfg)[0] == "user"
    assert decide(0.55, 0.5, cfg)[0] == "other_speaker"
    assert decide(0.70, 0.5, cfg)[0] == "unknown"
    assert decide(0.60, 0.85, cfg)[0] == "agent"
    # The agent's voice is only possible while the agent was playing.
    assert decide(0.60, 0.85, cfg, agent_possible=False)[0] == "other_speaker"
    # Without enrolment only the agent can be recognised.
    assert decide(None, 0.85, cfg)[0] == "agent"
    assert decide(None, 0.40, cfg)[0] == "unknown"
    # Confidence grows with the distance from the threshold.
    assert decide(0.95, 0.5, cfg)[1] > decide(0.77, 0.5, cfg)[1]
    with pytest.raises(ConfigError, match="other_threshold"):
        GateConfig(user_threshold=0.5, other_threshold=0.6)


def frames_of(audio: np.ndarray):
    n = len(audio) // FRAME_SAMPLES
    return [audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n)]


@pytest.fixture(scope="module")
def reader(enc, vad):
    """The LibriVox reader enrolled on recording 08 (6.7 s of speech); 09 is the same reader."""
    from duplex.audio.wav import read_audio
    from duplex.stages.speaker import speech_only

    a = read_audio(BOOK)
    return profile_from_speech(enc, speech_only(a, vad.probabilities(a)), "reader", source="08")


@needs_real
def test_gate_says_user_for_the_enrolled_voice_and_other_for_other_people(enc, reader, phone):
    from duplex.audio.wav import read_audio

    same = sec(read_audio(BOOK2), 0.3, 3.5)
    jfk = sec(read_audio(JFK), 0.3, 2.0)
    gate = SpeakerGate(enc, user=reader, agent=None)
    for x, want in ((same, "user"), (jfk, "other_speaker"), (phone["sheila_test"][0], "other_speaker")):
        gate.reset()
        verdicts = [v for i, f in enumerate(frames_of(x)) if (v := gate.push(f, t=i * 0.032)) is not None]
        assert verdicts, "1.6 s of speech or more must give verdicts"
        assert verdicts[-1].label == want, (want, verdicts[-1])
        assert verdicts[-1].confidence > 0
        # A few embeddings per second, never one per frame: first at 0.4 s, then every 0.256 s.
        run_s = len(x) // FRAME_SAMPLES * 0.032
        assert len(verdicts) == 1 + int((run_s - 0.416 + 1e-9) // 0.256)
        assert run_s - 0.256 - 1e-6 <= verdicts[-1].window_s <= run_s + 1e-6
        assert verdicts[0].window_s == pytest.approx(0.416)  # 13 frames: the first past 0.4 s


@needs_real
def test_gate_recognises_the_agents_own_voice(enc, tts, phone):
    agent = agent_profile(enc, tts)
    assert agent.speech_s > 5
    gate = SpeakerGate(enc, user=None, agent=agent)
    echo = np.concatenate(list(tts.synthesize("The museum opens at ten tomorrow, and tickets are cheaper online.")))
    last = None
    for i, f in enumerate(frames_of(echo[: int(1.6 * SAMPLE_RATE)])):
        last = gate.push(0.05 * f, t=i * 0.032, agent_speaking=True) or last
    assert last is not None and last.label == "agent", last
    assert "only the agent's own voice" in gate.describe()
    # A real person talking while the agent plays is not the agent.
    gate.reset()
    for i, f in enumerate(frames_of(phone["sheila_test"][0])):
        last = gate.push(f, t=i * 0.032, agent_speaking=True) or last
    assert last.label == "unknown" and last.sim_agent < agent_profile_threshold(gate)


def agent_profile_threshold(gate: SpeakerGate) -> float:
    return gate.cfg.agent_threshold


@needs_real
def test_gate_is_thread_safe_and_deterministic(enc, phone):
    sheila = profile_from_speech(enc, phone["sheila_enrol"], "sheila")
    frames = frames_of(phone["diane_test"][0]) + frames_of(phone["sheila_test"][0])

    def run(gate: SpeakerGate, out: list) -> None:
        for i, f in enumerate(frames):
            if (v := gate.push(f, t=i * 0.032)) is not None:
                out.append((v.label, v.sim_user))

    serial: list = []
    run(SpeakerGate(enc, sheila, None), serial)
    outs: list[list] = [[], []]
    threads = [threading.Thread(target=run, args=(SpeakerGate(enc, sheila, None), outs[k])) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert outs[0] == serial and outs[1] == serial


def test_gate_refuses_a_profile_from_another_encoder(enc):
    p = VoiceProfile("old", np.ones(256, np.float32), "some-other-encoder", 10, 5, 0.9, 0.8, -30)
    with pytest.raises(SpeakerError, match="enrol again"):
        SpeakerGate(enc, user=p, agent=None)


# --- profiles -------------------------------------------------------------------------------------


def make_profile(name: str = "alice") -> VoiceProfile:
    e = np.random.default_rng(1).random(256).astype(np.float32)
    return VoiceProfile(name, e / np.linalg.norm(e), "resemblyzer-ge2e-0.1.4", 10.2, 12, 0.91, 0.83, -28.0, "a.wav")


def test_profile_store_round_trip(tmp_path):
    store = ProfileStore(tmp_path / "voices")
    assert store.names() == []
    p = make_profile()
    path = store.save(p, audio=np.zeros(SAMPLE_RATE, np.float32))
    assert path == tmp_path / "voices" / "alice.json" and path.with_suffix(".wav").exists()
    q = store.load("alice")
    assert np.allclose(q.embedding, p.embedding, atol=1e-6) and q.speech_s == 10.2 and q.audio_file == "alice.wav"
    assert store.names() == ["alice"]
    assert store.remove("alice") == [path, path.with_suffix(".wav")]
    assert store.names() == []


def test_profile_errors(tmp_path):
    store = ProfileStore(tmp_path)
    for bad in ("", "../x", "a b", "x" * 65):
        with pytest.raises(SpeakerError, match="voice name"):
            check_name(bad)
    with pytest.raises(SpeakerError, match="no voice profile 'bob'.*duplex enroll"):
        store.load("bob")
    with pytest.raises(SpeakerError, match="no voice profile"):
        store.remove("bob")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpeakerError, match="cannot read voice profile"):
        store.load("bad")
    (tmp_path / "old.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(SpeakerError, match="enrol again"):
        store.load("old")
    (tmp_path / "cut.json").write_text(json.dumps({"version": 1, "name": "cut"}))
    with pytest.raises(SpeakerError, match="corrupt"):
        store.load("cut")


def test_voices_dir_follows_xdg(monkeypatch, tmp_path):
    from duplex.speaker_profiles import voices_dir

    monkeypatch.delenv("DUPLEX_VOICES_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert voices_dir() == tmp_path / "duplex" / "voices"
    monkeypatch.setenv("DUPLEX_VOICES_DIR", str(tmp_path / "v"))
    assert voices_dir() == tmp_path / "v"


# --- duplex enroll -----------------------------------------------------------------------------------


def enroll_args(tmp_path: Path, **kw) -> argparse.Namespace:
    from duplex.commands import enroll

    p = argparse.ArgumentParser()
    enroll.add_arguments(p)
    ns = p.parse_args(["--dir", str(tmp_path)])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


@needs_real
def test_enroll_round_trip(tmp_path, capsys):
    from duplex.commands import enroll

    assert enroll.run(enroll_args(tmp_path, input=str(BOOK), name="reader")) == 0
    assert "enrolled 'reader'" in capsys.readouterr().out
    store = ProfileStore(tmp_path)
    p = store.load("reader")
    assert 5.5 < p.speech_s <= 7.1 and p.self_sim_mean > 0.8 and p.audio_file == ""
    with pytest.raises(SpeakerError, match="already enrolled"):
        enroll.run(enroll_args(tmp_path, input=str(BOOK), name="reader"))
    assert enroll.run(enroll_args(tmp_path, list=True)) == 0
    assert capsys.readouterr().out.startswith("reader: ")
    assert enroll.run(enroll_args(tmp_path, remove="reader")) == 0
    assert store.names() == []


def test_enroll_bad_input(tmp_path):
    from duplex.audio.wav import write_wav
    from duplex.commands import enroll

    with pytest.raises(AudioError, match="not found"):
        enroll.run(enroll_args(tmp_path, input=str(tmp_path / "missing.wav")))
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really")
    with pytest.raises(AudioError, match="cannot read"):
        enroll.run(enroll_args(tmp_path, input=str(tmp_path / "junk.wav")))
    write_wav(tmp_path / "hum.wav", np.zeros(3 * SAMPLE_RATE, np.float32))
    with pytest.raises(SpeakerError, match="only 0.0 s of speech"):
        enroll.run(enroll_args(tmp_path, input=str(tmp_path / "hum.wav")))
    with pytest.raises(SpeakerError, match="voice name"):
        enroll.run(enroll_args(tmp_path, input=str(tmp_path / "hum.wav"), name="no/slash"))
    assert not list(tmp_path.glob("*.json"))


# --- start-up ------------------------------------------------------------------------------------------


def test_make_speaker_gate_caches_the_agent_voice_and_finds_the_user(enc, tts, tmp_path):
    from duplex.config import SpeakerConfig
    from duplex.stages.speaker import make_speaker_gate

    store = ProfileStore(tmp_path)
    assert make_speaker_gate(SpeakerConfig(enabled=False), tts, store=store, encoder=enc) is None
    on = SpeakerConfig(enabled=True, profile="user")
    gate = make_speaker_gate(on, tts, tts_voice="joe", store=store, encoder=enc)
    assert gate.user is None and gate.agent is not None
    assert "only the agent's own voice" in gate.describe() and "not enrolled" in gate.describe()
    assert len(list((tmp_path / "agent").glob("agent-*.json"))) == 1
    assert store.names() == []  # the agent's cache is not an enrolled voice

    class NoSynthesis:
        def synthesize(self, text: str):
            raise AssertionError("the cached agent profile must be used")

    store.save(make_profile("user"))
    again = make_speaker_gate(on, NoSynthesis(), tts_voice="joe", store=store, encoder=enc)
    assert np.allclose(again.agent.embedding, gate.agent.embedding, atol=1e-6)
    assert again.user is not None and again.user.name == "user"
    assert "user 'user' enrolled" in again.describe()
    # The default names no profile: agent-voice rejection only, whatever is enrolled.
    default = make_speaker_gate(SpeakerConfig(), NoSynthesis(), tts_voice="joe", store=store, encoder=enc)
    assert default.user is None and default.agent is not None and default.mode == "agent"


@needs_real
def test_feed_then_update_equals_push_and_reset_drops_a_late_update(enc, reader, phone):
    frames = frames_of(phone["sheila_test"][0])
    a, b = SpeakerGate(enc, reader, None), SpeakerGate(enc, reader, None)
    pushed = [v for i, f in enumerate(frames) if (v := a.push(f, t=i * 0.032)) is not None]
    split = [b.update(i * 0.032) for i, f in enumerate(frames) if b.feed(f)]
    assert pushed == split and len(pushed) >= 4
    # An update computed for a run that has ended since is dropped, not mixed into the next run.
    b.reset()
    for f in frames[:14]:
        due = b.feed(f)
    assert due

    class ResetDuringForward:
        """The run ends (another thread calls reset) while update() is in the encoder."""

        def embed(self, x: np.ndarray) -> np.ndarray:
            b.reset()
            return enc.embed(x)

    b.encoder = ResetDuringForward()  # type: ignore[assignment]
    assert b.update(1.0) is None and b.verdict.label == "unknown" and b.verdict.n_embeddings == 0


def test_missing_or_foreign_weights_say_what_to_install(tmp_path):
    with pytest.raises(SpeakerError, match="pip install --no-deps resemblyzer==0.1.4"):
        SpeakerEncoder("package:no_such_package_here/pretrained.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SpeakerError, match="cannot load speaker encoder weights") as err:
        SpeakerEncoder(str(bad))
    assert "\n" not in str(err.value)  # the CLI prints one line
