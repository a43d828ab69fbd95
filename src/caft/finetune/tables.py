"""Aggregate per-run metrics into the results tables and the OOD plot.

Input: one row per (task, method, selector, mode, split, seed) with the metrics of
:func:`caft.finetune.evaluation.summarize`. Output: mean ± standard error over seeds per condition, as the
paper reports them, by `caft.tables.over_seeds` (the EM half's table uses the same).

A *condition* is (method, selector, mode). The method ``"none"`` is the no-intervention baseline
(its selector is ignored), ``"skyline"`` the same recipe on decorrelated training data. ``mode`` says how the run was evaluated: ``deployed`` (hooks removed — the
CAFT number), ``hooked`` (evaluated with the ablation still on), ``test-only`` (trained without hooks,
ablated only at test time).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caft.artifacts import atomic_path
from caft.config import NO_INTERVENTION, SKYLINE
from caft.errors import DataError
from caft.tables import markdown_table, mean_sem, over_seeds

KEYS = ("task", "method", "selector", "mode", "split")
MEAN_METRICS = ("acc_2way", "acc_full", "logit_diff")
"""Averaged over seeds. ``n`` (examples per seed) is carried through instead: every seed of a condition
is evaluated on the same split, so differing counts mean mixed-up results and are an error."""
MODES = ("deployed", "test-only", "hooked")
SPLITS = ("ood", "val")
METRIC_TITLES = {
    "acc_full": "accuracy (argmax over the vocabulary)",
    "acc_2way": "accuracy (A vs B)",
    "logit_diff": "logit(correct) − logit(other)",
}
HATCHES = {"deployed": "", "test-only": "//", "hooked": ".."}
# tab20 dark shades first, then light ones; its grey (14) is reserved for no intervention.
NO_INTERVENTION_COLOUR = 14
PALETTE_INDICES = (0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19)


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and SEM over seeds per (task, method, selector, mode, split).

    Rows are ordered by task, split (OOD first), then condition (no intervention first, then method,
    selector, mode), so tables and plots list conditions the same way every time.
    """
    metrics = _check_metrics(metrics)
    table = over_seeds(metrics, KEYS, MEAN_METRICS).join(_examples_per_seed(metrics), on=list(KEYS))
    table["condition"] = [
        condition_label(m, s, mode) for m, s, mode in zip(table["method"], table["selector"], table["mode"])
    ]
    columns = [*KEYS, "condition", "seeds", "n"] + [f"{m}_{s}" for m in MEAN_METRICS for s in ("mean", "sem")]
    return _sort(table.loc[:, columns])


def condition_label(method: str, selector: str, mode: str) -> str:
    """Short label: "no intervention", "pca/manual" (deployed), "pca/random (test-only)", "sae/top (hooked)".

    Deployed is the default reading (the CAFT number), so only the other modes are spelled out. The label
    is the condition as configured, so the two random baselines read "sae/random" (the manual counts per
    layer) and "sae/random-pool" (the manual total from all layers' candidates, the paper's), and sort
    next to each other.
    """
    label = {NO_INTERVENTION: "no intervention", SKYLINE: SKYLINE}.get(method, f"{method}/{selector}")
    return label if mode == "deployed" else f"{label} ({mode})"


def to_markdown(table: pd.DataFrame) -> str:
    """One line per (task, split, condition); cells "mean ± SEM" ("–" for the SEM of one seed)."""
    header = ["task", "split", "condition", "seeds", "n", "acc (vocab)", "acc (A/B)", "logit diff"]
    rows = (
        [row.task, row.split, condition_label(row.method, row.selector, row.mode), str(row.seeds), str(row.n),
         mean_sem(row.acc_full_mean, row.acc_full_sem, 3),
         mean_sem(row.acc_2way_mean, row.acc_2way_sem, 3),
         mean_sem(row.logit_diff_mean, row.logit_diff_sem, 2)]
        for row in _sort(table).itertuples(index=False)
    )
    return markdown_table(header, 3, rows, "Mean ± standard error over seeds; – : one seed, no standard error.")


def plot_ood(
    table: pd.DataFrame,
    path: str | Path,
    metric: str = "acc_full",
    modes: Sequence[str] = ("deployed", "test-only"),
) -> None:
    """Grouped bar chart of OOD ``metric`` per task, one bar per condition, SEM error bars (paper Fig. 2).

    Colour follows (method, selector) and is picked from its name, so a condition keeps its colour across
    plots (unless two names hash alike within one plot); the hatch shows the mode. Drawn on a bare Agg canvas: no display and no pyplot global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if metric not in METRIC_TITLES:
        raise DataError(f"unknown metric {metric!r}; expected one of {list(METRIC_TITLES)}")
    ood = _sort(table[(table["split"] == "ood") & table["mode"].isin(list(modes))])
    if ood.empty:
        raise DataError(f"no OOD rows with mode in {list(modes)} to plot")
    tasks = list(dict.fromkeys(ood["task"]))
    conditions = list(dict.fromkeys(zip(ood["method"], ood["selector"], ood["mode"])))
    colours = _colours(conditions)
    width = 0.8 / len(conditions)
    fig = Figure(figsize=(max(6.0, min(24.0, 2.0 + len(tasks) * max(0.9, 0.25 * len(conditions)))), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_key = ood.set_index(["task", "method", "selector", "mode"])
    for i, condition in enumerate(conditions):
        rows = by_key.reindex([(task, *condition) for task in tasks])
        ax.bar(
            np.arange(len(tasks)) + (i - (len(conditions) - 1) / 2) * width,
            rows[f"{metric}_mean"].to_numpy(dtype=float),
            width,
            yerr=rows[f"{metric}_sem"].to_numpy(dtype=float),
            capsize=2,
            color=colours[condition],
            hatch=HATCHES.get(condition[2], ""),
            edgecolor="black",
            linewidth=0.5,
            error_kw={"elinewidth": 0.8},
            label=condition_label(*condition),
        )
    if metric == "logit_diff":
        ax.axhline(0.0, color="black", linewidth=0.8)
    else:
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (A vs B)")
        ax.set_ylim(0, 1.05)  # room above 1 for the error bars of near-perfect conditions
    slanted = len(tasks) > 3
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_xlabel("task")
    ax.set_ylabel(f"OOD {METRIC_TITLES[metric]}")
    ax.set_title(f"OOD {METRIC_TITLES[metric]} per task — mean ± SEM over seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")


def _check_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """Reject inputs that would silently skew a mean (missing values, unknown labels, duplicated runs);
    return the metrics with numeric metric columns."""
    if metrics.empty:
        raise DataError("metrics table is empty: no runs to aggregate")
    missing = [c for c in (*KEYS, "seed", *MEAN_METRICS, "n") if c not in metrics.columns]
    if missing:
        raise DataError(f"metrics table lacks column(s) {missing}; it has {list(metrics.columns)}")
    unlabelled = metrics.index[metrics.loc[:, [*KEYS, "seed"]].isna().any(axis=1)]
    if len(unlabelled):
        raise DataError(f"metrics row {unlabelled[0]}: a key is missing: {metrics.loc[unlabelled[0]].to_dict()}")
    for column, allowed in (("mode", MODES), ("split", SPLITS)):
        bad = metrics.loc[~metrics[column].isin(allowed), column]
        if not bad.empty:
            raise DataError(f"metrics row {bad.index[0]}: {column} {bad.iloc[0]!r} is not one of {list(allowed)}")
    values = metrics.loc[:, [*MEAN_METRICS, "n"]].apply(pd.to_numeric, errors="coerce")
    bad_rows = values.index[values.isna().any(axis=1)]
    if len(bad_rows):
        raise DataError(f"metrics row {bad_rows[0]}: a metric is missing or not a number: "
                        f"{metrics.loc[bad_rows[0], [*MEAN_METRICS, 'n']].to_dict()}")
    duplicated = metrics.duplicated(subset=[*KEYS, "seed"], keep=False)
    if duplicated.any():
        first = metrics.loc[duplicated, [*KEYS, "seed"]].iloc[0].to_dict()
        raise DataError(f"metrics table has more than one row for {first}")
    return metrics.assign(**{column: values[column] for column in values.columns})


def _examples_per_seed(metrics: pd.DataFrame) -> pd.Series:
    """``n`` per condition, the examples each of its seeds was evaluated on; see `MEAN_METRICS`."""
    counts = metrics.groupby(list(KEYS), sort=False)["n"].agg(["min", "max"])
    mixed = counts[counts["min"] != counts["max"]]
    if not mixed.empty:
        raise DataError(f"the seeds of {dict(zip(KEYS, mixed.index[0]))} were evaluated on different numbers "
                        f"of examples ({mixed['min'].iloc[0]} to {mixed['max'].iloc[0]}): mixed-up results?")
    return counts["min"].rename("n")


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    """Task, split (OOD first), no intervention first, then method, selector, mode (deployed first)."""
    order = pd.DataFrame({
        "task": table["task"].astype(str),
        "split": table["split"].map(SPLITS.index),
        "intervened": table["method"] != NO_INTERVENTION,
        "method": table["method"].astype(str),
        "selector": table["selector"].astype(str),
        "mode": table["mode"].map(MODES.index),
    }, index=table.index)
    return table.loc[order.sort_values(list(order.columns), kind="stable").index].reset_index(drop=True)


def _colours(conditions: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Any]:
    """A colour per (method, selector), picked by a hash of its name, probing past colours already taken."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    chosen: dict[tuple[str, str], int] = {}
    for method, selector, _ in conditions:
        if (method, selector) in chosen:
            continue
        if method == NO_INTERVENTION:
            chosen[(method, selector)] = NO_INTERVENTION_COLOUR
            continue
        start = zlib.crc32(f"{method}/{selector}".encode()) % len(PALETTE_INDICES)
        probe = [PALETTE_INDICES[(start + k) % len(PALETTE_INDICES)] for k in range(len(PALETTE_INDICES))]
        taken = set(chosen.values())
        chosen[(method, selector)] = next((index for index in probe if index not in taken), probe[0])
    return {c: tab20[chosen[(c[0], c[1])]] for c in conditions}
