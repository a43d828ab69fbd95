"""Artifacts are written atomically, readable by others, and carry their provenance."""

import pandas as pd
import pytest

from caft.artifacts import atomic_path, read_parquet_metadata, write_json, write_parquet


def test_an_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "table.parquet"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half a table")
            raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_artifact(tmp_path):
    target = tmp_path / "run.json"
    write_json({"version": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "version": 1\n}\n'


def test_parquet_carries_provenance_and_is_readable_by_others(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), target, {"stage": "demo", "config": {"k": 3}})
    assert read_parquet_metadata(target) == {"stage": "demo", "config": {"k": 3}}
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]
    assert target.stat().st_mode & 0o044 == 0o044
