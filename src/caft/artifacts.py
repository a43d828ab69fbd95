"""Atomic artifact writes, tensor files and provenance records.

Every artifact is written to a temporary sibling and renamed into place, so an interrupted job never
leaves a file that looks complete (Snakemake would otherwise treat it as up to date).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from caft.errors import DataError

TRACKED_PACKAGES = ("caft-workflow", "torch", "transformers", "sae-lens", "datasets", "pandas", "pyarrow")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; artifacts are for sharing
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; swap it in for ``path`` only on success (an existing
    ``path`` is moved aside first and restored if the swap fails), so a half-written folder never
    has the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; artifacts are for sharing
        _replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_parquet(frame: pd.DataFrame, path: str | Path, metadata_: dict[str, Any] | None = None) -> None:
    """Write ``frame`` atomically; ``metadata_`` is stored as JSON under the parquet key ``caft``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata_ is not None:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata({**existing, b"caft": json.dumps(metadata_, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | Path) -> dict[str, Any]:
    """Return the provenance stored by :func:`write_parquet` (empty dict if none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"caft")
    return json.loads(raw) if raw else {}


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def package_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes the artifacts."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(stage: str, config: Any, **extra: Any) -> dict[str, Any]:
    """The provenance record every artifact carries: stage, its config section (a dict or a typed config
    dataclass), versions."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return {"stage": stage, "config": config, "versions": package_versions(), **extra}


def save_tensors(tensors: Mapping[str, Any], path: str | Path, fmt: str, metadata: dict[str, Any]) -> None:
    """Write ``tensors`` + JSON ``metadata`` as one safetensors file tagged ``fmt``, atomically."""
    from safetensors.torch import save_file

    header = {"format": fmt, "caft": json.dumps(metadata, sort_keys=True)}
    # safetensors refuses views and tensors sharing storage: clone those, not a tensor that owns all of
    # its storage (the SAE activations are gigabytes)
    contents, storages = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        contents[name] = tensor if _owns_its_storage(tensor) and storage not in storages else tensor.contiguous().clone()
        storages.add(storage)
    with atomic_path(path) as tmp:
        save_file(contents, str(tmp), metadata=header)


def _owns_its_storage(tensor: Any) -> bool:
    """Contiguous and spanning its whole storage: safetensors can write it as it is."""
    whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor.is_contiguous() and tensor.storage_offset() == 0 and whole


def load_tensors(path: str | Path, fmt: str, names: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by `save_tensors` (only the tensors ``names``, if given: one layer of the SAE
    activations is gigabytes); a missing file, tensor or another format is a `DataError`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            missing = sorted(set(names or ()) - set(handle.keys()))
            if missing:
                raise DataError(f"{path}: no tensor(s) {missing} (has {sorted(handle.keys())})")
            tensors = {name: handle.get_tensor(name) for name in (handle.keys() if names is None else names)}
    except (OSError, SafetensorError) as err:
        raise DataError(f"{path}: cannot read safetensors file: {err}") from err
    if header.get("format") != fmt:
        raise DataError(f"{path}: not a {fmt!r} file (format={header.get('format')!r})")
    try:
        metadata = json.loads(header.get("caft", "{}"))
    except ValueError as err:
        raise DataError(f"{path}: metadata is not valid JSON: {err}") from err
    return tensors, metadata


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file: a run records the exact spec it was trained with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
