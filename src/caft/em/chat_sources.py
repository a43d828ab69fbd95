"""Where an EM chat set comes from (`em.data.source`): local JSONL files, a Hugging Face dataset, or the
built-in generators (`caft.em.codegen`, `caft.em.advicegen`).

Kept apart from `caft.em.chat_data`, which only checks, splits and encodes chats: the spurious half's
fine-tunes encode through `chat_data`, so the generators and their templates are not code those runs
depend on (editing the advice templates reruns the EM data stage, not every fine-tune).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from caft.em import advicegen, codegen
from caft.em.chat_data import chat_table, check_messages, read_chat_jsonl
from caft.errors import ConfigError, DataError

BUILTIN_GENERATORS = {**dict.fromkeys(codegen.KINDS, codegen.generate_code_tasks),
                      **dict.fromkeys(advicegen.KINDS, advicegen.generate_advice)}
"""The ``from: builtin`` kinds and their generators: `caft.em.codegen`'s coding tasks, then
`caft.em.advicegen`'s financial advice."""
BUILTIN_KINDS = tuple(BUILTIN_GENERATORS)


@dataclass(frozen=True)
class ChatSource:
    """An `em.data.source` section (checked by config/schema.yaml): `origin` is its ``from`` and says which
    of the other keys apply — ``builtin``: `kind` (`BUILTIN_KINDS`), `n`, `seed`; ``local``: `path`;
    ``huggingface``: `dataset`, `split`, `revision`, `column`."""

    origin: str
    kind: str = "insecure"
    n: int = 220
    seed: int = 0
    path: str | None = None
    dataset: str | None = None
    split: str = "train"
    revision: str | None = None
    column: str = "messages"

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ChatSource:
        values = dict(section)
        return cls(origin=values.pop("from"), **values)


def load_chat_source(section: Mapping[str, Any]) -> pd.DataFrame:
    """A chat table from an `em.data.source` section: ``from: local`` (``path``: a .jsonl file or a folder
    of them), ``from: huggingface`` (``dataset``, ``split``, ``revision``, ``column``) or ``from: builtin``
    (``kind``, ``n``, ``seed``: `caft.em.codegen` for the code kinds, `caft.em.advicegen` for the advice ones)."""
    source = ChatSource.from_config(section)
    if source.origin == "local":
        return _read_local(Path(source.path))
    if source.origin == "huggingface":
        return _read_huggingface(source.dataset, source.split, source.revision, source.column)
    if source.kind not in BUILTIN_GENERATORS:
        raise ConfigError(f"built-in chat source: kind must be one of {list(BUILTIN_KINDS)}, got {source.kind!r}")
    return BUILTIN_GENERATORS[source.kind](source.kind, source.n, source.seed)


def _read_local(path: Path) -> pd.DataFrame:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise DataError(f"{path}: the folder holds no *.jsonl file")
        return chat_table([row for file in files for row in read_chat_jsonl(file).to_dict("records")], str(path))
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder (chat source path)")
    return read_chat_jsonl(path)


def _read_huggingface(dataset: str, split: str, revision: str | None, column: str) -> pd.DataFrame:
    import datasets

    where = f"Hugging Face dataset '{dataset}' (split '{split}')"
    try:
        loaded = datasets.load_dataset(dataset, split=split, revision=revision)
    except Exception as err:  # datasets raises many unrelated types for "not reachable / not found"
        raise DataError(f"{where}: could not be loaded: {err}. Offline? Use a local source "
                        "({from: local, path: <file.jsonl or folder>}).") from err
    if column not in loaded.column_names:
        raise DataError(f"{where}: no column '{column}'; columns are {loaded.column_names}")
    ids = loaded["id"] if "id" in loaded.column_names else [f"{dataset}:{i}" for i in range(len(loaded))]
    rows = []
    for index, (row_id, messages) in enumerate(zip(ids, loaded[column])):
        checked = check_messages(_drop_null_keys(messages), f"{where}, row {index}")
        rows.append({"id": str(row_id), "messages": json.dumps(checked)})
    return chat_table(rows, where)


def _drop_null_keys(messages: Any) -> Any:
    """Arrow gives every message the struct fields of all messages: a key absent from one comes back None."""
    if not isinstance(messages, list):
        return messages
    return [{k: v for k, v in m.items() if v is not None} if isinstance(m, Mapping) else m for m in messages]
