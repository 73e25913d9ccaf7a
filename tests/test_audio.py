"""Audio I/O, the player's cursor, and the VAD/ASR stages on real recordings."""

from __future__ import annotations

import difflib
import struct

import numpy as np
import pytest

from duplex.audio import CHUNK_SAMPLES, FRAME_SAMPLES, SAMPLE_RATE
from duplex.audio.player import Player, Segment, word_timing
from duplex.audio.wav import IncrementalWav, read_audio, repair_wav_header, write_wav
from duplex.errors import AudioError
from tests.conftest import SHARED


def test_read_audio_resamples_any_rate_and_mixes_channels(tmp_path):
    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32) * 0.5
    import soundfile as sf

    sf.write(tmp_path / "s.wav", stereo, 22050, subtype="FLOAT")
    x = read_audio(tmp_path / "s.wav")
    assert abs(len(x) - SAMPLE_RATE) <= 1
    assert 0.2 < np.abs(x).max() < 0.3  # mixed to mono: half amplitude


def test_real_11025_hz_recording_is_resampled():
    src = SHARED / "13_pocketsphinx_chan3_vad" / "chan3.wav"
    if not src.exists():
        pytest.skip("shared realaudio not present")
    x = read_audio(src)
    assert abs(len(x) / SAMPLE_RATE - 20.87) < 0.01


@pytest.mark.parametrize("content", [b"", b"not a wav at all" * 10])
def test_bad_audio_files_raise_audio_error(tmp_path, content):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match="bad.wav"):
        read_audio(p)
    with pytest.raises(AudioError, match="not found"):
        read_audio(tmp_path / "missing.wav")


def test_incremental_wav_is_valid_at_every_flush_and_repairs_after_a_crash(tmp_path):
    p = tmp_path / "a.wav"
    w = IncrementalWav(p)
    w.write(np.full(1000, 0.25, dtype=np.float32))
    w.flush()
    assert len(read_audio(p)) == 1000
    w.write(np.full(600, 0.25, dtype=np.float32))  # written but not flushed: a crash now
    w._f.flush()
    assert repair_wav_header(p) is True
    assert len(read_audio(p)) == 1600
    assert repair_wav_header(p) is False
    head = p.read_bytes()[:44]
    assert struct.unpack("<I", head[40:44])[0] == 3200


def test_player_reports_exactly_the_words_played_and_flushes_within_a_chunk():
    audio = np.full(CHUNK_SAMPLES * 10, 0.5, dtype=np.float32)
    seg = Segment(1, audio, "one two three four five", word_timing("one two three four five", audio))
    p = Player(10 * SAMPLE_RATE)
    p.enqueue(seg)
    heard: list[str] = []
    for _ in range(4):
        c = p.pull()
        assert c.turn == 1 and c.n_voiced == CHUNK_SAMPLES
        heard += c.words
    assert heard == ["one", "two"]  # 40 % of the audio: words end at 20 %, 40 %, ...
    assert p.flush() == CHUNK_SAMPLES * 6
    after = p.pull()
    assert after.turn is None and not after.audio.any()
    assert p.cursor == CHUNK_SAMPLES * 5 and p.pending == 0


def test_streaming_vad_equals_silero_batch(vad):
    """Our frame-by-frame ONNX wrapper gives silero's own batch probabilities."""
    import torch
    from silero_vad import load_silero_vad

    x = read_audio(SHARED / "07_pocketsphinx_goforward" / "goforward_16k.wav") if SHARED.exists() else None
    if x is None:
        from tests.conftest import DATA

        x = read_audio(DATA / "goforward.wav")
    n = len(x) // FRAME_SAMPLES * FRAME_SAMPLES
    ours = vad.probabilities(x[:n])
    ref_model = load_silero_vad(onnx=True)
    ref = ref_model.audio_forward(torch.from_numpy(x[:n]), 16000).numpy().ravel()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert ours.max() > 0.9 and ours[:5].max() < 0.5  # speech found, leading silence not


def test_asr_partials_grow_toward_the_final(data_dir):
    from duplex.config import ASRConfig, VADConfig
    from duplex.listener import Listener
    from duplex.stages.asr import PocketSphinxASR
    from duplex.stages.vad import SileroVAD

    x = read_audio(data_dir / "goforward.wav")
    x = np.concatenate([x, np.zeros(SAMPLE_RATE, dtype=np.float32)])
    lis = Listener(SileroVAD(), PocketSphinxASR(), VADConfig(), ASRConfig())
    partials, final = [], None
    for i in range(len(x) // FRAME_SAMPLES):
        f = lis.step(x[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        if f.partial_changed and not f.ended:
            partials.append(f.partial)
        if f.final is not None:
            final = f.final
    assert final is not None and "forward" in final
    assert len(partials) >= 3

    def sim(a: str) -> float:
        return difflib.SequenceMatcher(None, a.split(), final.split()).ratio()

    third = max(1, len(partials) // 3)
    early = np.mean([sim(p) for p in partials[:third]])
    late = np.mean([sim(p) for p in partials[-third:]])
    assert late > early
    assert sim(partials[-1]) >= 0.75


def test_write_wav_round_trip(tmp_path):
    x = (np.sin(np.arange(1600) / 10) * 0.3).astype(np.float32)
    write_wav(tmp_path / "r.wav", x)
    y = read_audio(tmp_path / "r.wav")
    np.testing.assert_allclose(x, y, atol=1 / 32767 * 2)


def test_asr_reset_forgets_what_earlier_sessions_adapted_to(data_dir):
    """A replay must decode the same words whatever the process decoded before: after a
    session of loud noise left mid-utterance, ``reset`` gives a fresh decoder's words."""
    from duplex.stages.asr import PocketSphinxASR

    speech = read_audio(data_dir / "librivox_0870.wav")[: SAMPLE_RATE * 8]
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE * 10).astype(np.float32) * 0.5

    def decode(asr: PocketSphinxASR, x: np.ndarray, finish: bool = True) -> str:
        asr.start()
        for i in range(0, len(x), FRAME_SAMPLES):
            asr.accept(x[i : i + FRAME_SAMPLES])
        return asr.finish() if finish else ""

    fresh = decode(PocketSphinxASR(), speech)
    used = PocketSphinxASR()
    decode(used, noise, finish=False)
    used.reset()
    assert decode(used, speech) == fresh
