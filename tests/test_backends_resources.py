"""``duplex.resources``: split models are joined once with a checksum, and resolution never writes."""

from __future__ import annotations

import hashlib

import pytest

from duplex.errors import ModelError
from duplex.resources import (
    KOKORO_ONNX_INT8,
    PACKAGED,
    WHISPER_BASE,
    PackagedModel,
    assemble,
    package_path,
    resolve_model_path,
)


def _split(tmp_path, data: bytes, n: int = 3, sha: str | None = None) -> PackagedModel:
    step = -(-len(data) // n)
    parts = []
    for i in range(n):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(data[i * step : (i + 1) * step])
        parts.append(str(p))
    return PackagedModel(name="test split model", ref=str(tmp_path / "model.bin"), packages=(), licence="MIT",
                         parts=tuple(parts), assembled=str(tmp_path / "model.bin"),
                         sha256=sha or hashlib.sha256(data).hexdigest())


def test_a_split_model_is_joined_in_order_and_checked(tmp_path):
    data = bytes(range(256)) * 1000
    model = _split(tmp_path, data)
    out = assemble(model)
    assert out.read_bytes() == data
    assert not list(tmp_path.glob("*.partial"))
    mtime = out.stat().st_mtime_ns
    assert assemble(model) == out and out.stat().st_mtime_ns == mtime  # idempotent: kept, not rewritten


def test_parts_that_do_not_hash_right_are_refused_and_nothing_is_left(tmp_path):
    model = _split(tmp_path, b"x" * 10_000, sha="0" * 64)
    with pytest.raises(ModelError, match="expected 0000"):
        assemble(model)
    assert not (tmp_path / "model.bin").exists() and not list(tmp_path.glob("*.partial"))


def test_a_corrupt_assembled_file_is_rebuilt(tmp_path):
    data = b"abc" * 5000
    model = _split(tmp_path, data)
    (tmp_path / "model.bin").write_bytes(b"abd" * 5000)  # right size, wrong bytes
    assert assemble(model).read_bytes() == data


def test_packaged_models_are_pinned_and_split_ones_carry_a_checksum():
    for m in PACKAGED.values():
        assert m.packages and all("==" in p for p in m.packages), m
        assert m.licence
        if m.parts:
            assert len(m.sha256) == 64 and m.assembled


@pytest.mark.parametrize("model", [WHISPER_BASE, KOKORO_ONNX_INT8], ids=["whisper-base", "kokoro-onnx"])
def test_installed_split_models_were_assembled_at_install_with_the_right_hash(model):
    if not model.installed():
        pytest.skip(f"{' '.join(model.packages)} not installed (scripts/setup.sh quality)")
    path = package_path(model.assembled)
    assert path.exists(), "scripts/setup.sh runs python -m duplex.resources assemble"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    assert h.hexdigest() == model.sha256
    assert model.path().exists()


def test_an_unassembled_split_model_names_the_command_that_assembles_it(tmp_path):
    model = _split(tmp_path, b"y" * 3000)
    with pytest.raises(ModelError) as err:
        resolve_model_path(str(tmp_path / "model.bin"))  # not a registered model: plain "not found"
    assert "not found" in str(err.value)
    assert "python -m duplex.resources assemble" in model.unassembled_message()
