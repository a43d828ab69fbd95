"""Source tables: the built-in generator, a local directory, or a Hugging Face dataset id.

Every source ends up in the public schema of the paper's data: ``frames`` tables
(``text`` with ``$PROFESSION$``/``$PRONOUN$`` placeholders, ``category``) for gender-style tasks and
``questions`` tables (``question``, ``correct``, ``incorrect``) for double multiple choice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from caft.errors import ConfigError, DataError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "frames": ("text", "category"),
    "questions": ("question", "correct", "incorrect"),
}
KEY_COLUMN = {"frames": "text", "questions": "question"}
FRAME_CATEGORIES = ("nominative", "object")
FRAME_PLACEHOLDERS = ("$PROFESSION$", "$PRONOUN$")
LOCAL_SUFFIXES = (".csv", ".parquet", ".jsonl")


@dataclass(frozen=True)
class SourceSpec:
    """One `sources.<name>` section (checked by config/schema.yaml): where a table comes from (`origin`, the
    config's ``from``) and that kind's keys — ``builtin``: `generator`, `rows`, `seed`; ``local``: `path`,
    `file`; ``huggingface``: `dataset`, `split`, `config_name`, `revision`. `generator` and `file` are the
    source's name when None."""

    origin: str
    generator: str | None = None
    rows: int | None = None
    seed: int = 0
    path: str | None = None
    file: str | None = None
    dataset: str | None = None
    split: str = "train"
    config_name: str | None = None
    revision: str | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SourceSpec:
        values = dict(section)
        return cls(origin=values.pop("from"), **values)


def load_source(name: str, spec: SourceSpec | Mapping[str, Any], table: str, base_dir: str | Path = ".") -> pd.DataFrame:
    """Load source ``name`` as `spec` (or its config section) describes and return a validated,
    deduplicated table."""
    if table not in REQUIRED_COLUMNS:
        raise ConfigError(f"source '{name}': table kind must be one of {sorted(REQUIRED_COLUMNS)}, got '{table}'")
    if not isinstance(spec, SourceSpec):
        spec = SourceSpec.from_config(spec)
    if spec.origin == "builtin":
        raw, where = _read_builtin(name, spec), f"built-in generator '{name}'"
    elif spec.origin == "local":
        path = _local_file(name, spec, Path(base_dir))
        raw, where = _read_local(path), str(path)
    else:
        raw, where = _read_huggingface(name, spec), f"Hugging Face dataset '{spec.dataset}'"
    return validate_table(raw, table, where)


def validate_table(raw: pd.DataFrame, table: str, where: str) -> pd.DataFrame:
    """Check columns and values, keep only the schema's columns, drop duplicate keys (and log how many)."""
    if raw.empty:
        raise DataError(f"{where}: the table is empty")
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in raw.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing} for a '{table}' table; found columns {list(raw.columns)}"
        )
    frame = raw.loc[:, list(REQUIRED_COLUMNS[table])].reset_index(drop=True)
    for column in frame.columns:
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if blank.any():
            row = int(blank.idxmax())
            raise DataError(f"{where}: row {row} has an empty value in column '{column}'")
        frame[column] = frame[column].astype(str).str.strip()
    if table == "frames":
        _check_frames(frame, where)
    else:
        same = frame["correct"] == frame["incorrect"]
        if same.any():
            row = int(same.idxmax())
            raise DataError(f"{where}: row {row} has the same 'correct' and 'incorrect' answer")
    key = KEY_COLUMN[table]
    duplicated = frame[key].duplicated(keep="first")
    if duplicated.any():
        log.info("%s: dropped %d duplicate row(s) by '%s'", where, int(duplicated.sum()), key)
    frame = frame.loc[~duplicated].reset_index(drop=True)
    log.info("%s: %d rows", where, len(frame))
    return frame


def _check_frames(frame: pd.DataFrame, where: str) -> None:
    bad = ~frame["category"].isin(FRAME_CATEGORIES)
    if bad.any():
        row = int(bad.idxmax())
        raise DataError(
            f"{where}: row {row} has category '{frame.at[row, 'category']}'; "
            f"allowed values are {list(FRAME_CATEGORIES)}"
        )
    for placeholder in FRAME_PLACEHOLDERS:
        lacking = frame["text"].str.count(placeholder.replace("$", r"\$")) != 1
        if lacking.any():
            row = int(lacking.idxmax())
            raise DataError(f"{where}: row {row} must contain {placeholder} exactly once: {frame.at[row, 'text']!r}")


def _read_builtin(name: str, spec: SourceSpec) -> pd.DataFrame:
    from caft.data.builtin import generate_source

    return generate_source(spec.generator or name, seed=int(spec.seed), rows=spec.rows)


def _local_file(name: str, spec: SourceSpec, base_dir: Path) -> Path:
    directory = base_dir / spec.path
    stem = spec.file or name
    candidates = [directory / f"{stem}{suffix}" for suffix in LOCAL_SUFFIXES]
    found = [p for p in candidates if p.is_file()]
    if not found:
        expected = ", ".join(p.name for p in candidates)
        raise DataError(f"source '{name}': no file in {directory}; expected one of {expected}")
    if len(found) > 1:
        raise DataError(f"source '{name}': several files match in {directory}: {[p.name for p in found]}; keep one")
    return found[0]


def _read_local(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]}: {err}") from err


def _read_huggingface(name: str, spec: SourceSpec) -> pd.DataFrame:
    import datasets

    dataset_id = spec.dataset
    split = spec.split
    try:
        loaded = datasets.load_dataset(dataset_id, name=spec.config_name, split=split, revision=spec.revision)
    except Exception as err:  # datasets raises many unrelated types for "not reachable / not found"
        raise DataError(
            f"source '{name}': could not load Hugging Face dataset '{dataset_id}' (split '{split}'): {err}. "
            "Offline? Download it once, or point the source at a local directory "
            f"(sources.{name}: {{from: local, path: <dir with {name}.csv|parquet|jsonl>}})."
        ) from err
    return loaded.to_pandas()
