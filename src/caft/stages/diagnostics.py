"""Stages of `rules/diagnostics.smk`: why CAFT works or fails on a model and task — the oracle bound's
directions, the paper's filter on the no-intervention runs, and the task survey."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from caft.ablation.ablate import ablate_projection
from caft.ablation.specs import save_spec
from caft.artifacts import atomic_path, provenance, write_json, write_parquet
from caft.directions.oracle import (
    OracleConfig,
    class_mean_gap,
    decorrelated_pool,
    fit_eraser,
    label_accuracy,
    last_position_residuals,
)
from caft.finetune.survey import SurveyCriteria, eligibility, paper_filter, plot_survey, survey_markdown, survey_table
from caft.finetune.tables import aggregate
from caft.model.loading import load_checkpoint, num_layers, resolve_layers

log = logging.getLogger(__name__)


def oracle_directions(cfg: OracleConfig, eraser: str, model_dir: Path, train_split: Path, skyline_split: Path,
                      intended: str, spurious: str, out_path: Path) -> None:
    """The oracle bound's spec: the shortcut's label erased at the configured layers (see `caft.directions.oracle`)."""
    pool = decorrelated_pool(pd.read_parquet(train_split), pd.read_parquet(skyline_split), intended, spurious,
                             cfg.seed, cfg.max_examples)
    model, tokenizer = load_checkpoint(model_dir)
    layers = resolve_layers(cfg.layers, num_layers(model), "oracle.layers")
    residuals = last_position_residuals(model, tokenizer, pool["prompt"].tolist(), layers, cfg.batch_size)
    labels = (pool["spurious"] == "A").to_numpy()
    settings = {"eraser": eraser, "layers": cfg.layers, "seed": cfg.seed, "max_examples": cfg.max_examples,
                "intended": intended, "spurious": spurious, "model": str(model_dir), "positions": cfg.positions}
    spec = fit_eraser(residuals, labels, eraser, provenance("oracle_directions", settings, examples=len(pool)),
                      cfg.positions)
    readable = label_accuracy(residuals, labels)
    erased = {layer: ablate_projection(h, spec.bases[layer], spec.centers[layer], spec.readouts.get(layer))
              for layer, h in residuals.items()}
    before, after = class_mean_gap(residuals, labels), class_mean_gap(erased, labels)
    log.info("%d pooled examples (half agreeing, half disagreeing)", len(pool))
    for layer in layers:
        log.info("layer %d: shortcut label read by class means with accuracy %.3f; class-mean gap %.3g, "
                 "after erasure %.3g", layer, readable[layer], before[layer], after[layer])
    save_spec(spec, out_path)


def _aggregated(metrics_paths: list[Path]) -> pd.DataFrame:
    return aggregate(pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True))


def survey_filter(criteria: SurveyCriteria, metrics_paths: list[Path], tasks: list[str], out_path: Path) -> list[str]:
    """The paper's filter on the no-intervention runs: the tasks that need a skyline run (`caft.finetune.survey`)."""
    passing = paper_filter(_aggregated(metrics_paths), tasks, criteria)
    log.info("%d of %d tasks learned D_amb and pass the paper's filter (%s): %s", len(passing), len(tasks),
             criteria, passing)
    write_json({"max_none_ood": criteria.max_none_ood, "min_none_val": criteria.min_none_val, "tasks": tasks,
                "passing": passing}, out_path)
    return passing


def survey(criteria: SurveyCriteria, metrics_paths: list[Path], concepts: dict[str, tuple[str, str]], parquet: Path,
           csv: Path, markdown: Path, plot: Path, eligible_path: Path) -> pd.DataFrame:
    """The task survey (no intervention and skyline per task) and the eligibility list (`caft.finetune.survey`)."""
    table = survey_table(_aggregated(metrics_paths), concepts, criteria)
    write_parquet(table, parquet, provenance("survey", criteria, runs=len(metrics_paths)))
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown) as tmp:
        tmp.write_text(survey_markdown(table), encoding="utf-8")
    plot_survey(table, criteria, plot)
    record = eligibility(table, criteria)
    write_json(record, eligible_path)
    log.info("eligible: %s", record["eligible"] or "none")
    return table
