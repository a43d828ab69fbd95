"""Stages of `rules/data.smk`: source tables, then D_amb / D_val / D_OOD (and the skyline split) per task."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from caft.artifacts import provenance, write_parquet
from caft.data.sources import SourceSpec, load_source
from caft.data.tasks import FrameTaskConfig, McmcSplitConfig, build_frame_task, build_mcmc_task

log = logging.getLogger(__name__)


def source_table(name: str, spec: SourceSpec, table: str, out_path: Path) -> None:
    """One source table in the public schema: loaded, validated and deduplicated."""
    write_parquet(load_source(name, spec, table), out_path, provenance("source_table", spec, source=name))


def frame_task(task: str, cfg: FrameTaskConfig, frames_path: Path, out_paths: dict[str, Path]) -> None:
    """The splits of a gender-style frame task."""
    for split, table in build_frame_task(pd.read_parquet(frames_path), cfg).items():
        log.info("%s: %d examples, target letters %s", split, len(table), table["target"].value_counts().to_dict())
        write_parquet(table, out_paths[split], provenance("frame_task", cfg, task=task, split=split))


def mcmc_task(a: str, b: str, cfg: McmcSplitConfig, a_path: Path, b_path: Path, out_paths: dict[str, Path]) -> None:
    """The splits of an MCMC pair, shared by both intended indices."""
    for split, table in build_mcmc_task(pd.read_parquet(a_path), pd.read_parquet(b_path), a, b, cfg).items():
        log.info("%s: %d examples, letters of Qa's answer %s", split, len(table),
                 table["answer_a"].value_counts().to_dict())
        write_parquet(table, out_paths[split], provenance("mcmc_task", cfg, pair=[a, b], split=split))
