"""The results tables of both halves: mean ± standard error over seeds, and the Markdown, CSV and parquet
files they are written as.

Both halves report a condition the same way: the mean of a metric over its training seeds and its
standard error (SEM = sample std (ddof=1) / √seeds). With a single seed the SEM is undefined: it is NaN
in the table and "–" in Markdown, never a misleading 0. The half-specific parts — which columns are keys
and metrics, row order, labels, the Markdown header — stay with each half (`caft.finetune.tables`,
`caft.stages.em`); the arithmetic and the file formats live here once, so the two tables cannot drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caft.artifacts import atomic_path, write_parquet
from caft.errors import DataError

NO_SEM = "–"
"""Markdown for the SEM of one seed."""
NO_MEAN = "n/a"
"""Markdown for a mean over no values (e.g. an EM run whose answers no judge scored)."""


def over_seeds(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per distinct `keys` (sorted): ``seeds``, the number of runs, and ``{metric}_mean`` and
    ``{metric}_sem`` of each of `metrics`, in that order.

    A NaN metric (e.g. a rate with nothing to divide by) is left out of its mean and SEM rather than
    counted as 0, so the SEM divides by √(runs with a value), not √seeds.
    """
    missing = [column for column in (*keys, *metrics) if column not in runs.columns]
    if missing or not keys or not metrics:
        raise DataError(f"per-run metrics: need key column(s) {list(keys)} and metric column(s) {list(metrics)}; "
                        f"missing {missing}")
    grouped = runs.groupby(list(keys), sort=True, dropna=False)
    table = grouped.size().rename("seeds").to_frame()
    for metric in metrics:
        values = grouped[metric]
        table[f"{metric}_mean"] = values.mean()
        # pandas' std is the sample std (ddof=1) and NaN for one value, which keeps the SEM NaN there.
        table[f"{metric}_sem"] = values.std(ddof=1) / np.sqrt(values.count())
    return table.reset_index()


def mean_sem(mean: float, sem: float, decimals: int) -> str:
    """A "mean ± SEM" cell such as ``0.830 ± 0.020``; ``z`` stops -0.001 printing as -0.00."""
    if math.isnan(mean):
        return NO_MEAN
    return f"{mean:z.{decimals}f} ± " + (NO_SEM if math.isnan(sem) else f"{sem:z.{decimals}f}")


def markdown_table(header: Sequence[str], label_columns: int, rows: Iterable[Sequence[str]], note: str) -> str:
    """A Markdown table: the first `label_columns` left-aligned, the numbers after them right-aligned, and
    `note` below it. A "|" in a cell (task ids such as ``verbs|sentiment|1``) is escaped, so it cannot
    split a row."""
    align = ["---"] * label_columns + ["---:"] * (len(header) - label_columns)
    lines = [_markdown_row(header), "|" + "|".join(align) + "|", *(_markdown_row(cells) for cells in rows)]
    return "\n".join([*lines, "", note]) + "\n"


def write_tables(
    table: pd.DataFrame,
    markdown: str,
    parquet_path: str | Path,
    csv_path: str | Path,
    md_path: str | Path,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write an aggregated table as parquet (with ``provenance`` in its metadata) and CSV, and its
    `markdown` rendering, each atomically."""
    write_parquet(table, parquet_path, provenance)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
