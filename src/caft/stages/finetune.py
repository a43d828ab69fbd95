"""Stages of `rules/finetune.smk`: the random-directions baseline, fine-tuning with ablation, evaluation,
and the OOD accuracy tables."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec, centered, load_spec, save_spec
from caft.ablation.specs import random_directions as draw_random_directions
from caft.artifacts import provenance, write_parquet
from caft.errors import DataError
from caft.finetune.evaluation import EvaluationConfig, predict, summarize
from caft.finetune.tables import aggregate, plot_ood, to_markdown
from caft.finetune.training import TrainConfig, train
from caft.model.loading import ModelSpec, checkpoint_shape, load_checkpoint, resolve_layers, save_checkpoint
from caft.finetune.training_job import training_job
from caft.model.precision import resolve_precision
from caft.tables import write_tables

log = logging.getLogger(__name__)


def random_directions(base_dir: Path, layers: str | list[int], k: int, seed: int, out_path: Path,
                      centers_path: Path | None = None) -> None:
    """The seeded random-directions baseline: k orthonormal directions per configured layer."""
    n_layers, d_model = checkpoint_shape(base_dir)
    spec = draw_random_directions(d_model, resolve_layers(layers, n_layers), k, seed)
    save_spec(centered(spec, centers_path), out_path)


def finetune(
    cfg: TrainConfig,
    model: ModelSpec,
    base_dir: Path,
    train_split: Path,
    spec_path: Path | None,
    seed: int,
    key: dict[str, Any],
    checkpoint_dir: Path,
    log_path: Path,
    meta_path: Path,
    answer: str = "target",
    mode: str = "project",
) -> None:
    """One fine-tuning run from a fresh copy of the base model, trained on column ``answer`` with the spec
    ablated as ``mode`` says; resumable per epoch."""
    training_job(train, lambda network, tokenizer: save_checkpoint(network, tokenizer, checkpoint_dir), cfg,
                 "finetune", base_dir, model.dtype, train_split, spec_path, seed, mode, checkpoint_dir, log_path,
                 meta_path, {**key, "model": dataclasses.asdict(model), "answer": answer}, answer=answer)


def evaluate(
    cfg: EvaluationConfig,
    checkpoint_dir: Path,
    dtype: str,
    splits: dict[str, Path],
    spec_path: Path | None,
    modes: list[str],
    answer: str,
    key: dict[str, Any],
    predictions_path: Path,
    metrics_path: Path,
) -> None:
    """Evaluate one checkpoint on each split, once per mode ("hooked" and "test-only" attach the spec);
    precision "bf16-autocast" runs the forward pass in bfloat16 (hooks still project in float32)."""
    spec: InterventionSpec | None = load_spec(spec_path) if spec_path else None
    model, tokenizer = load_checkpoint(checkpoint_dir, dtype)
    requested = cfg.precision
    cfg = dataclasses.replace(cfg, precision=resolve_precision(requested, model.device, "evaluation.precision"))
    tables = {split: pd.read_parquet(path) for split, path in splits.items()}
    for split, table in tables.items():
        if table.empty:
            raise DataError(f"{splits[split]}: split is empty")
    predictions, metrics = [], []
    autocast = cfg.precision == "bf16-autocast"
    for mode in modes:
        with ablation_hooks(model, spec if mode in ("hooked", "test-only") else None):
            for split, table in tables.items():
                with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast):
                    result = predict(model, tokenizer, table, answer, batch_size=cfg.batch_size, progress=True)
                summary = summarize(result)
                log.info("%s / %s: %s", mode, split, {k: round(v, 4) for k, v in summary.items()})
                predictions.append(result.assign(**key, mode=mode, split=split))
                metrics.append({**key, "mode": mode, "split": split, **summary})
    meta = provenance("evaluate", {**dataclasses.asdict(cfg), "precision_requested": requested, "modes": modes,
                                   "answer": answer}, **key)
    write_parquet(pd.concat(predictions, ignore_index=True), predictions_path, meta)
    write_parquet(pd.DataFrame(metrics), metrics_path, meta)


def ood_table(metrics_paths: list[Path], parquet: Path, csv: Path, markdown: Path, plot: Path) -> pd.DataFrame:
    """Aggregate every run's metrics into mean ± SEM over seeds, as tables and a Figure-2-style plot."""
    metrics = pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True)
    table = aggregate(metrics)
    write_tables(table, to_markdown(table), parquet, csv, markdown,
                 provenance("ood_table", {"runs": len(metrics_paths)}))
    plot_ood(table, plot)
    return table
