"""The training generator's Kokoro users: held-out voices stay held out, and they speak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies.data import (
    KOKORO_HELD,
    KOKORO_SHARE,
    KOKORO_TRAIN,
    Renderer,
    Voice,
    kokoro_available,
    sample_kokoro_voice,
    sample_voice,
)

needs_kokoro = pytest.mark.skipif(not kokoro_available(), reason="Kokoro's packaged model is not installed")


def _mix(v: Voice) -> dict[str, float]:
    return {name: float(w) for name, w in (part.split(":") for part in v.name.split(","))}


def test_training_kokoro_users_never_contain_the_held_out_voice_and_held_out_users_are_mostly_it() -> None:
    rng = np.random.default_rng(7)
    train = [sample_kokoro_voice(rng, held_out=False) for _ in range(300)]
    held = [sample_kokoro_voice(rng, held_out=True) for _ in range(300)]
    for v in train:
        mix = _mix(v)
        assert KOKORO_HELD not in mix and set(mix) <= set(KOKORO_TRAIN) and len(mix) == 2
        assert abs(sum(mix.values()) - 1.0) < 2e-3
    for v in held:
        assert _mix(v)[KOKORO_HELD] >= 0.65
    # Distinct speakers, not a handful: mixes, speeds and warps all vary.
    assert len({v.key for v in train}) == len(train)
    assert len({round(v.warp, 3) for v in train}) > 150 and len({round(v.length_scale, 3) for v in train}) > 150


def test_kokoro_takes_its_share_of_users_only_when_asked() -> None:
    rng = np.random.default_rng(3)
    engines = [sample_voice(rng, held_out=False, kokoro=True).engine for _ in range(2000)]
    share = engines.count("kokoro") / len(engines)
    assert abs(share - KOKORO_SHARE) < 0.04
    rng = np.random.default_rng(3)
    assert all(sample_voice(rng, held_out=False, kokoro=False).engine != "kokoro" for _ in range(500))


@needs_kokoro
def test_a_kokoro_user_renders_speech_at_16_khz_cached(tmp_path: Path) -> None:
    render = Renderer(tmp_path)
    voice = sample_kokoro_voice(np.random.default_rng(0), held_out=False)
    a = render(voice, "wait, that is not what I asked")
    assert a.dtype == np.float32 and 1.0 < len(a) / 16000 < 4.5
    frames = a[: len(a) // 512 * 512].reshape(-1, 512)
    voiced = np.sqrt(np.mean(frames**2, axis=1)) > 0.02
    assert voiced.mean() > 0.4  # speech, not silence or a click
    assert np.max(np.abs(a)) == pytest.approx(0.5, abs=1e-3)
    # The second time comes from the cache, bit for bit.
    assert np.array_equal(render(voice, "wait, that is not what I asked"), a)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    # Another mix is another speaker: a different rendering of the same words.
    other = Voice("kokoro", f"{KOKORO_TRAIN[0]}:1.000,{KOKORO_TRAIN[3]}:0.000", length_scale=1.0, warp=1.0)
    b = render(other, "wait, that is not what I asked")
    assert len(b) != len(a) or not np.allclose(b, a)
