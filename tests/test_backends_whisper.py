"""faster-whisper streaming ASR, on a tiny multilingual Whisper built and converted locally.

The tiny model's weights are random, so what it writes is nonsense words; these tests pin
what does not depend on accuracy: loading through faster-whisper, local agreement (the
committed prefix never changes), streaming-equals-batch for the final, the bounded
window, language detection, and the one-line errors for missing models.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from backend_fixtures import tiny_whisper  # noqa: F401 - a fixture

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.config import ASRConfig
from duplex.errors import ASRError
from duplex.stages.whisper_asr import LocalAgreement, WhisperASR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A deterministic voiced signal: a gliding harmonic tone with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 + rng.standard_normal(t.size) * 0.02
    return x.astype(np.float32)


def _stream(asr: WhisperASR, audio: np.ndarray) -> list[tuple[str, str]]:
    """Feed 32 ms frames as the engine does, asking for a partial after each; (partial, stable) seen."""
    seen = []
    asr.start()
    for i in range(0, audio.size, FRAME_SAMPLES):
        asr.accept(audio[i : i + FRAME_SAMPLES])
        seen.append((asr.partial(), asr.stable))
    return seen


# --- local agreement: the rule itself ---------------------------------------------------


def test_a_word_is_committed_only_when_two_consecutive_decodes_agree_on_it():
    la = LocalAgreement()
    la.update("I want".split())
    assert la.committed == [] and la.text() == "I want"
    la.update("I want to".split())
    assert la.committed == ["I", "want"] and la.text() == "I want to"
    la.update("I want two tickets".split())  # "to" was never confirmed: it may still change
    assert la.committed == ["I", "want"] and la.tail == ["two", "tickets"]
    la.update("I want two tickets please".split())
    assert la.committed == ["I", "want", "two", "tickets"]


def test_agreement_ignores_case_and_punctuation_but_keeps_the_committed_spelling():
    la = LocalAgreement()
    la.update(["Hello", "there"])
    la.update(["hello,", "there."])
    assert la.committed == ["hello,", "there."]
    la.update(["Hello", "there", "friend"])
    assert la.committed == ["hello,", "there."]
    assert la.text() == "hello, there. friend"


def test_the_committed_prefix_never_changes_whatever_the_decodes_say():
    rng = random.Random(7)
    vocab = "a b c d e".split()
    la = LocalAgreement()
    base: list[str] = []
    for _ in range(300):
        if rng.random() < 0.6:
            base.append(rng.choice(vocab))
        hyp = list(base)
        for _ in range(rng.randint(0, 3)):  # the decoder rewrites a few words anywhere
            if hyp:
                hyp[rng.randrange(len(hyp))] = rng.choice(vocab)
        before = list(la.committed)
        la.update(hyp)
        assert la.committed[: len(before)] == before
        assert la.text().startswith(" ".join(la.committed))


# --- the real model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def asr(tiny_whisper):  # noqa: F811
    return WhisperASR(ASRConfig(backend="faster-whisper", model=str(tiny_whisper), partial_every_ms=320))


def test_the_tiny_model_loads_through_faster_whisper_as_a_multilingual_model(asr, tiny_whisper):  # noqa: F811
    assert asr.multilingual
    assert asr.model_path == tiny_whisper
    assert asr.language is None  # nothing detected yet and none configured


def test_the_final_equals_one_batch_transcription_of_the_same_audio(asr, tiny_whisper):  # noqa: F811
    from faster_whisper import WhisperModel

    audio = _speechlike(3.0)
    decodes = asr.decodes
    _stream(asr, audio)
    partial_decodes = asr.decodes - decodes
    final = asr.finish()
    # At most one decode per partial_every_ms of new audio, however often partial() is asked.
    assert 3 <= partial_decodes <= 3.0 / 0.32 + 1
    batch_model = WhisperModel(str(tiny_whisper), device="cpu", compute_type="int8")
    segments, info = batch_model.transcribe(
        audio, beam_size=1, best_of=1, temperature=0.0, condition_on_previous_text=False,
        without_timestamps=True, vad_filter=False,
    )
    batch = " ".join(" ".join(s.text.strip() for s in segments).split())
    assert final == batch
    assert final, "the tiny model writes something for 3 s of sound"
    assert asr.language == info.language
    assert asr.language_probability == pytest.approx(info.language_probability, abs=1e-6)


def test_partials_only_grow_their_stable_prefix(asr):
    seen = _stream(asr, _speechlike(4.0, seed=3))
    asr.finish()
    stables = [s for _, s in seen]
    for prev, cur in zip(stables, stables[1:]):
        assert cur.startswith(prev), f"stable prefix flickered: {prev!r} -> {cur!r}"
    for partial, stable in seen:
        assert partial.startswith(stable)
    assert any(stables), "two decodes of the same growing audio agree on something"


def test_a_long_utterance_is_cut_so_each_decode_sees_at_most_the_window(tiny_whisper):  # noqa: F811
    asr = WhisperASR(
        ASRConfig(backend="faster-whisper", model=str(tiny_whisper), partial_every_ms=500, window_s=2.0)
    )
    step = SAMPLE_RATE // 2
    longest = 0
    stables = []
    asr.start()
    audio = _speechlike(7.0, seed=5)
    for i in range(0, audio.size, FRAME_SAMPLES):
        asr.accept(audio[i : i + FRAME_SAMPLES])
        asr.partial()
        longest = max(longest, asr._u.audio.size)
        stables.append(asr.stable)
    carried = list(asr._u.carried)
    final = asr.finish()
    assert longest <= 2 * SAMPLE_RATE + step + FRAME_SAMPLES
    for prev, cur in zip(stables, stables[1:]):
        assert cur.startswith(prev)
    assert final.startswith(" ".join(carried))
    assert asr.language is not None  # locked at the first cut, kept for the final


def test_a_configured_language_is_used_and_reported_with_certainty(tiny_whisper):  # noqa: F811
    asr = WhisperASR(ASRConfig(backend="faster-whisper", model=str(tiny_whisper), language="es"))
    _stream(asr, _speechlike(1.0))
    asr.finish()
    assert (asr.language, asr.language_probability) == ("es", 1.0)


def test_accept_is_not_blocked_by_a_decode_running_on_another_thread(tiny_whisper):  # noqa: F811
    asr = WhisperASR(ASRConfig(backend="faster-whisper", model=str(tiny_whisper), partial_every_ms=32))
    asr.start()
    asr.accept(_speechlike(20.0))
    worker = threading.Thread(target=asr.partial)
    worker.start()
    deadline = time.monotonic() + 10
    while not asr._decode_lock.locked():
        assert worker.is_alive() and time.monotonic() < deadline, "never saw the decode running"
        time.sleep(0.0005)
    asr.accept(np.zeros(FRAME_SAMPLES, np.float32))
    still_decoding = asr._decode_lock.locked()
    worker.join()
    assert still_decoding, "accept() returned only after the decode finished"
    asr.finish()


# --- errors a user can act on -------------------------------------------------------------


def test_a_model_name_that_is_not_cached_fails_with_one_line_saying_how_to_get_it():
    with pytest.raises(ASRError) as err:
        WhisperASR(ASRConfig(backend="faster-whisper", model="duplex-test/no-such-whisper"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "duplex-test/no-such-whisper" in msg and "huggingface-cli download" in msg


def test_a_size_name_maps_to_the_systran_repository():
    from duplex.resources import whisper_repo

    assert whisper_repo("small") == "Systran/faster-whisper-small"
    assert whisper_repo("large-v3-turbo") == "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
    assert whisper_repo("org/custom-ct2") == "org/custom-ct2"


def test_a_directory_without_the_converted_files_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ASRError, match=r"lacks model\.bin, tokenizer\.json"):
        WhisperASR(ASRConfig(backend="faster-whisper", model=str(tmp_path)))


def test_an_unsupported_compute_type_is_one_line(tiny_whisper):  # noqa: F811
    with pytest.raises(ASRError) as err:
        WhisperASR(ASRConfig(backend="faster-whisper", model=str(tiny_whisper), compute_type="no-such-type"))
    assert "\n" not in str(err.value) and "no-such-type" in str(err.value)


@pytest.mark.parametrize(
    ("module", "setup"),
    [
        ("faster_whisper", "from duplex.stages.whisper_asr import WhisperASR as C; from duplex.config import ASRConfig as K; "
        "C(K(backend='faster-whisper', model='small'))"),
        ("transformers", "from duplex.stages.transformers_llm import TransformersLLM as C; from duplex.config import LLMConfig as K; "
        "C(K(backend='transformers', model='Qwen/Qwen2.5-0.5B-Instruct'))"),
        pytest.param(
            "kokoro",
            "from duplex.stages.kokoro_tts import KokoroTTS as C; from duplex.config import TTSConfig as K; "
            "C(K(backend='kokoro', voice='af_heart'))",
            marks=pytest.mark.slow,  # importing kokoro (spaCy, transformers) takes ~20-40 s here
        ),
    ],
    ids=["faster-whisper", "transformers", "kokoro"],
)
def test_missing_weights_never_wait_on_a_network_even_when_the_environment_says_online(module, setup, tmp_path):
    """The hub endpoint is a socket that accepts and never answers: any download attempt
    would hang there. Loading must fail at once, offline, with a one-line ModelError."""
    pytest.importorskip(module)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # connections complete in the kernel; nothing ever reads or answers
    port = hole.getsockname()[1]
    env = dict(
        os.environ,
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf"),  # an empty cache
        HF_HUB_ETAG_TIMEOUT="600",
        HF_HUB_DOWNLOAD_TIMEOUT="600",
    )
    code = (
        "import sys\nfrom duplex.errors import ModelError\n"
        f"try:\n    {setup}\nexcept ModelError as e:\n    print('ERR', e); sys.exit(3)\n"
    )
    t0 = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        hole.close()
    assert out.returncode == 3, out.stdout + out.stderr[-2000:]
    # A network wait would take HF_HUB_ETAG_TIMEOUT (600 s) and hit the 120 s timeout
    # above; the margin below only absorbs slow imports on a loaded machine.
    assert time.monotonic() - t0 < 115
    line = out.stdout.strip()
    assert line.count("\n") == 0 and "huggingface-cli download" in line
