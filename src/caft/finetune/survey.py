"""The task survey and the paper's filter: which tasks can show a CAFT effect on this model.

Per task, two runs of the same recipe: no intervention (does the model prefer the shortcut?) and the
skyline (is the intended rule learnable from the training examples at this budget?). The paper keeps
tasks whose no-intervention OOD accuracy is below ``max_none_ood`` (0.9). We also require that the
no-intervention run learned D_amb at all (D_val accuracy ≥ ``min_none_val``: a task the recipe cannot
fit shows nothing) and that the skyline reaches ``min_skyline_ood`` on D_OOD, since otherwise CAFT
cannot win, and ``min_skyline_val`` on D_val: a skyline right on D_OOD but wrong on D_val has learned to
avoid the spurious answer, which is just another shortcut. The skyline is only trained for tasks passing the first two tests. D_OOD is used here only
to decide eligibility, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from caft.artifacts import atomic_path
from caft.config import SectionConfig
from caft.errors import DataError

METRIC = "acc_2way"
CONDITIONS = ("none", "skyline")


@dataclass(frozen=True)
class SurveyCriteria(SectionConfig):
    """Thresholds of the filter, on deployed A-vs-B OOD accuracy averaged over the survey's seeds."""

    SECTION: ClassVar[str] = "survey criteria"

    max_none_ood: float = 0.9
    min_none_val: float = 0.9
    min_skyline_ood: float = 0.9
    min_skyline_val: float = 0.9


def deployed_accuracy(aggregated: pd.DataFrame, task: str, method: str, split: str) -> tuple[float, float, int]:
    """(mean, SEM, seeds) of a task's deployed A-vs-B accuracy; NaN when the run was not made."""
    hit = aggregated[(aggregated["task"] == task) & (aggregated["method"] == method)
                     & (aggregated["split"] == split) & (aggregated["mode"] == "deployed")]
    if hit.empty:
        return float("nan"), float("nan"), 0
    return float(hit[f"{METRIC}_mean"].iloc[0]), float(hit[f"{METRIC}_sem"].iloc[0]), int(hit["seeds"].iloc[0])


def paper_filter(aggregated: pd.DataFrame, tasks: list[str], criteria: SurveyCriteria) -> list[str]:
    """The tasks whose no-intervention run learned D_amb and scores below the paper's OOD threshold: only
    these need a skyline."""
    scores = {task: (deployed_accuracy(aggregated, task, "none", "val")[0],
                     deployed_accuracy(aggregated, task, "none", "ood")[0]) for task in tasks}
    missing = [task for task, pair in scores.items() if np.isnan(pair).any()]
    if missing:
        raise DataError(f"survey: no no-intervention D_val/D_OOD result for task(s) {missing}")
    return [task for task, (val, ood) in scores.items()
            if val >= criteria.min_none_val and ood < criteria.max_none_ood]


def survey_table(aggregated: pd.DataFrame, concepts: dict[str, tuple[str, str]],
                 criteria: SurveyCriteria) -> pd.DataFrame:
    """One row per task: val and OOD accuracy (mean, SEM) without intervention and of the skyline, which
    rule the model follows, and whether the task is eligible. ``concepts`` maps a task to its
    (intended, spurious) concept names; ``aggregated`` is `caft.finetune.tables.aggregate` output. A task that fails
    the paper's filter has no skyline run (NaN)."""
    rows = []
    for task, (intended, spurious) in concepts.items():
        row: dict[str, Any] = {"task": task, "intended": intended, "spurious": spurious}
        for method in CONDITIONS:
            for split in ("val", "ood"):
                mean, sem, seeds = deployed_accuracy(aggregated, task, method, split)
                row[f"{method}_{split}"], row[f"{method}_{split}_sem"] = mean, sem
                row["seeds"] = max(row.get("seeds", 0), seeds)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["learned"] = table["none_val"] >= criteria.min_none_val
    table["follows"] = np.where(table["none_val"] < 0.75, "neither (not learned)",
                                np.where(table["none_ood"] >= 0.5, table["intended"], table["spurious"]))
    table["paper_filter"] = table["none_ood"] < criteria.max_none_ood
    missing = table["learned"] & table["paper_filter"] & table["skyline_ood"].isna()
    if missing.any():
        raise DataError(f"survey: task(s) {table.loc[missing, 'task'].tolist()} pass the paper's filter but have "
                        "no skyline result")
    table["skyline_passes"] = (table["skyline_ood"] >= criteria.min_skyline_ood) & (
        table["skyline_val"] >= criteria.min_skyline_val)
    table["eligible"] = table["learned"] & table["paper_filter"] & table["skyline_passes"]
    return table


def eligibility(table: pd.DataFrame, criteria: SurveyCriteria) -> dict[str, Any]:
    """The filter as a JSON-ready record: the criteria, the eligible tasks, and each task's numbers."""
    return {
        "criteria": {"metric": f"deployed {METRIC}, mean over seeds", "none_val_at_least": criteria.min_none_val,
                     "none_ood_below": criteria.max_none_ood, "skyline_ood_at_least": criteria.min_skyline_ood,
                     "skyline_val_at_least": criteria.min_skyline_val},
        "eligible": table.loc[table["eligible"], "task"].tolist(),
        "tasks": {row["task"]: {key: (bool(v) if isinstance(v, (bool, np.bool_)) else v) for key, v in row.items()
                                if key != "task" and not (isinstance(v, float) and np.isnan(v))}
                  for row in table.to_dict("records")},
    }


def survey_markdown(table: pd.DataFrame) -> str:
    """The survey as a Markdown table (A-vs-B accuracy, deployed; ± SEM over seeds where > 1 seed)."""
    def cell(row: pd.Series, key: str) -> str:
        if np.isnan(row[key]):
            return "not run"
        sem = row[f"{key}_sem"]
        return f"{row[key]:.3f}" + ("" if np.isnan(sem) else f" ± {sem:.3f}")

    lines = ["| task | intended | spurious | seeds | none val | none OOD | skyline val | skyline OOD | follows | eligible |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['task']} | {row['intended']} | {row['spurious']} | {row['seeds']} | "
                     f"{cell(row, 'none_val')} | {cell(row, 'none_ood')} | {cell(row, 'skyline_val')} | "
                     f"{cell(row, 'skyline_ood')} | {row['follows']} | {'yes' if row['eligible'] else 'no'} |")
    lines += ["", "Deployed A-vs-B accuracy, mean ± SEM over seeds. The skyline is run only for tasks whose "
              "no-intervention run learned D_amb and passes the paper's filter; \"not run\": the task fails one."]
    return "\n".join(lines) + "\n"


def plot_survey(table: pd.DataFrame, criteria: SurveyCriteria, path: str | Path) -> None:
    """No-intervention OOD against skyline OOD, one point per task; the eligible corner shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axvspan(-0.02, criteria.max_none_ood, ymin=(criteria.min_skyline_ood + 0.02) / 1.04, ymax=1,
               color="tab:green", alpha=0.12, label="eligible")
    table = table[table["skyline_ood"].notna()]
    colours = np.where(table["eligible"], "tab:green", "tab:grey")
    ax.errorbar(table["none_ood"], table["skyline_ood"], xerr=table["none_ood_sem"].fillna(0),
                yerr=table["skyline_ood_sem"].fillna(0), fmt="none", ecolor="black", elinewidth=0.6)
    ax.scatter(table["none_ood"], table["skyline_ood"], c=colours, edgecolors="black", zorder=3)
    # tasks within 0.1 of each other share one label (one "task (none, skyline)" per line), so none is
    # drawn over another
    spots: dict[tuple[float, float], list[tuple[float, float, str]]] = {}
    for row in table.itertuples(index=False):
        spot = (round(row.none_ood, 1), round(row.skyline_ood, 1))
        spots.setdefault(spot, []).append((row.none_ood, row.skyline_ood, row.task))
    for points in spots.values():
        points.sort(key=lambda point: (-point[1], point[2]))
        x, y = max(p[0] for p in points), max(p[1] for p in points)
        label = "\n".join(f"{task} ({none:.2f}, {sky:.2f})" for none, sky, task in points)
        ax.annotate(label, (x, y), fontsize=7, xytext=(8, 0), textcoords="offset points",
                    va="top" if y > 0.7 else "center")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("no intervention: OOD accuracy (A vs B)")
    ax.set_ylabel("skyline: OOD accuracy (A vs B)")
    ax.set_title("Task survey: does the model prefer the shortcut, and is the rule learnable?")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
