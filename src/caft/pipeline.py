"""Stage functions: read a stage's input files, call the library, write its artifacts.

The ``workflow/scripts/*.py`` adapters only map ``snakemake.input/output/params`` onto these, so
every stage can be run and tested without Snakemake.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from caft.activations import load_tensors, save_tensors
from caft.artifacts import atomic_path, package_versions, provenance, write_json, write_parquet
from caft.errors import DataError
from caft.evaluation import predict, summarize
from caft.interventions import (
    InterventionSpec,
    ablate_projection,
    ablation_hooks,
    load_spec,
    random_directions,
    save_spec,
)
from caft.models import ModelSpec, default_device, load_model, num_layers
from caft.oracle import class_mean_gap, decorrelated_pool, fit_eraser, label_accuracy, last_position_residuals
from caft.survey import SurveyCriteria, eligibility, paper_filter, plot_survey, survey_markdown, survey_table
from caft.tables import aggregate, plot_ood, write_tables
from caft.training import TrainConfig, save_checkpoint, train, write_history
from caft.windows import residual_rows

log = logging.getLogger(__name__)

MEANS_FORMAT = "caft.residual_means/1"


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_checkpoint(path: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """A fresh (model, tokenizer) from a local checkpoint the workflow wrote, on the default device."""
    return load_model(ModelSpec(name=str(path), dtype=dtype), device=default_device())


def build_base_model(model_section: dict[str, Any], out_dir: Path) -> None:
    """Materialise the configured base model once as a local safetensors checkpoint.

    Later stages load this directory (seconds) instead of re-converting a GGUF file or reaching a hub.
    """
    spec = ModelSpec.from_config(model_section)
    start = time.perf_counter()
    model, tokenizer = load_model(spec)
    log.info("loaded %s (%s, %d parameters) in %.0f s", spec.name, type(model).__name__,
             sum(p.numel() for p in model.parameters()), time.perf_counter() - start)
    save_checkpoint(model, tokenizer, out_dir)
    write_json(provenance("base_model", model_section), out_dir / "caft_provenance.json")


def base_model_shape(base_dir: Path) -> tuple[int, int]:
    """(number of decoder layers, hidden size) from the checkpoint's config, without loading weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_dir).get_text_config()
    return int(config.num_hidden_layers), int(config.hidden_size)


def resolve_layers(layers: str | list[int], n_layers: int) -> list[int]:
    """``"all"`` or explicit indices; negative indices count from the last layer."""
    if layers == "all":
        return list(range(n_layers))
    resolved = sorted({layer % n_layers if -n_layers <= layer < n_layers else layer for layer in layers})
    bad = [layer for layer in resolved if not 0 <= layer < n_layers]
    if bad:
        raise DataError(f"interventions.layers {bad} out of range: the base model has {n_layers} layers")
    return resolved


def make_random_directions(base_dir: Path, layers: str | list[int], k: int, seed: int, out_path: Path,
                           centers_path: Path | None = None) -> None:
    """The seeded random-directions baseline: k orthonormal directions per configured layer."""
    n_layers, d_model = base_model_shape(base_dir)
    spec = random_directions(d_model, resolve_layers(layers, n_layers), k, seed)
    save_spec(centered(spec, centers_path), out_path)


def residual_means_stage(base_dir: Path, corpus_path: Path, batch_size: int, out_path: Path) -> None:
    """The base model's mean residual (block output) per layer over the corpus, BOS and padding left out:
    the centers of mean-ablating projections (`interventions.center`)."""
    model, tokenizer = load_checkpoint(base_dir)
    docs = pd.read_parquet(corpus_path)["input_ids"].tolist()
    layers = list(range(num_layers(model)))
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for layer, kept in residual_rows(model, tokenizer, docs, layers, batch_size, progress=True):
        sums[layer] = sums.get(layer, 0.0) + kept.astype(np.float64).sum(axis=0)
        counts[layer] = counts.get(layer, 0) + len(kept)
    means = {f"layer_{layer}": torch.from_numpy(sums[layer] / counts[layer]).float() for layer in layers}
    log.info("residual means over %d corpus tokens at %d layers", counts[layers[0]], len(layers))
    save_tensors(means, out_path, MEANS_FORMAT, provenance("residual_means", {"batch_size": batch_size}))


def centered(spec: InterventionSpec, centers_path: Path | None) -> InterventionSpec:
    """A projection spec mean-ablating instead of zero-ablating (see `ablate_projection`), when given means."""
    if centers_path is None or spec.kind != "projection":
        return spec
    means, _ = load_tensors(centers_path, MEANS_FORMAT)
    missing = [layer for layer in spec.bases if f"layer_{layer}" not in means]
    if missing:
        raise DataError(f"{centers_path}: no mean residual for layer(s) {missing}")
    centers = {layer: means[f"layer_{layer}"] for layer in spec.bases}
    return InterventionSpec("projection", bases=spec.bases, centers=centers,
                            provenance={**spec.provenance, "centers": str(centers_path)})


def finetune_run(
    base_dir: Path,
    model_section: dict[str, Any],
    train_split: Path,
    spec_path: Path | None,
    finetune_section: dict[str, Any],
    task_kind: str,
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
    cfg = TrainConfig.from_config(finetune_section, task_kind)
    spec = load_spec(spec_path) if spec_path else None
    spec_digest = file_digest(spec_path) if spec_path else ""
    table = pd.read_parquet(train_split)
    model, tokenizer = load_checkpoint(base_dir, model_section.get("dtype", "float32"))
    resume_dir = checkpoint_dir.with_name(checkpoint_dir.name + ".resume")
    start = time.perf_counter()
    model, history = train(model, tokenizer, table, cfg, seed, spec, answer=answer, resume_dir=resume_dir,
                           spec_digest=spec_digest, mode=mode)
    save_checkpoint(model, tokenizer, checkpoint_dir)
    write_history(history, log_path)
    meta = {
        **key, "seed": seed, "finetune": finetune_section, "model": model_section, "answer": answer,
        "mode": mode if spec else None,
        "spec": {"path": str(spec_path), "sha256": spec_digest, "provenance": spec.provenance} if spec else None,
        "train_examples": len(table), "steps": len(history), "seconds": round(time.perf_counter() - start, 1),
        "final_loss": history[-1]["loss"], "versions": package_versions(),
    }
    write_json(meta, meta_path)
    shutil.rmtree(resume_dir, ignore_errors=True)


def evaluate_run(
    checkpoint_dir: Path,
    dtype: str,
    splits: dict[str, Path],
    spec_path: Path | None,
    modes: list[str],
    answer: str,
    batch_size: int,
    key: dict[str, Any],
    predictions_path: Path,
    metrics_path: Path,
    precision: str = "float32",
) -> None:
    """Evaluate one checkpoint on each split, once per mode ("hooked" and "test-only" attach the spec);
    ``precision`` "bf16-autocast" runs the forward pass in bfloat16 (hooks still project in float32)."""
    spec: InterventionSpec | None = load_spec(spec_path) if spec_path else None
    model, tokenizer = load_checkpoint(checkpoint_dir, dtype)
    tables = {split: pd.read_parquet(path) for split, path in splits.items()}
    for split, table in tables.items():
        if table.empty:
            raise DataError(f"{splits[split]}: split is empty")
    predictions, metrics = [], []
    for mode in modes:
        with ablation_hooks(model, spec if mode in ("hooked", "test-only") else None):
            for split, table in tables.items():
                with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
                    result = predict(model, tokenizer, table, answer, batch_size=batch_size, progress=True)
                summary = summarize(result)
                log.info("%s / %s: %s", mode, split, {k: round(v, 4) for k, v in summary.items()})
                predictions.append(result.assign(**key, mode=mode, split=split))
                metrics.append({**key, "mode": mode, "split": split, **summary})
    meta = provenance("evaluate", {"batch_size": batch_size, "modes": modes, "answer": answer, "precision": precision},
                      **key)
    write_parquet(pd.concat(predictions, ignore_index=True), predictions_path, meta)
    write_parquet(pd.DataFrame(metrics), metrics_path, meta)


def oracle_directions(model_dir: Path, train_split: Path, skyline_split: Path, intended: str, spurious: str,
                      eraser: str, layers: str | list[int], seed: int, max_examples: int, batch_size: int,
                      out_path: Path, positions: str = "last") -> None:
    """The oracle bound's spec: the shortcut's label erased at the configured layers (see `caft.oracle`)."""
    pool = decorrelated_pool(pd.read_parquet(train_split), pd.read_parquet(skyline_split), intended, spurious,
                             seed, max_examples)
    model, tokenizer = load_checkpoint(model_dir)
    resolved = resolve_layers(layers, num_layers(model))
    residuals = last_position_residuals(model, tokenizer, pool["prompt"].tolist(), resolved, batch_size)
    labels = (pool["spurious"] == "A").to_numpy()
    settings = {"eraser": eraser, "layers": layers, "seed": seed, "max_examples": max_examples,
                "intended": intended, "spurious": spurious, "model": str(model_dir), "positions": positions}
    spec = fit_eraser(residuals, labels, eraser, provenance("oracle_directions", settings, examples=len(pool)),
                      positions)
    readable = label_accuracy(residuals, labels)
    erased = {layer: ablate_projection(h, spec.bases[layer], spec.centers[layer], spec.readouts.get(layer))
              for layer, h in residuals.items()}
    before, after = class_mean_gap(residuals, labels), class_mean_gap(erased, labels)
    log.info("%d pooled examples (half agreeing, half disagreeing)", len(pool))
    for layer in resolved:
        log.info("layer %d: shortcut label read by class means with accuracy %.3f; class-mean gap %.3g, "
                 "after erasure %.3g", layer, readable[layer], before[layer], after[layer])
    save_spec(spec, out_path)


def build_ood_table(metrics_paths: list[Path], parquet: Path, csv: Path, markdown: Path, plot: Path) -> pd.DataFrame:
    """Aggregate every run's metrics into mean ± SEM over seeds, as tables and a Figure-2-style plot."""
    metrics = pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True)
    table = aggregate(metrics)
    write_tables(table, parquet, csv, markdown, provenance("ood_table", {"runs": len(metrics_paths)}))
    plot_ood(table, plot)
    return table


def survey_filter_stage(metrics_paths: list[Path], tasks: list[str], criteria_section: dict[str, Any],
                        out_path: Path) -> list[str]:
    """The paper's filter on the no-intervention runs: the tasks that need a skyline run (`caft.survey`)."""
    aggregated = aggregate(pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True))
    passing = paper_filter(aggregated, tasks, SurveyCriteria.from_config(criteria_section))
    log.info("%d of %d tasks learned D_amb and pass the paper's filter (%s): %s", len(passing), len(tasks),
             criteria_section, passing)
    write_json({**criteria_section, "tasks": tasks, "passing": passing}, out_path)
    return passing


def survey_stage(metrics_paths: list[Path], concepts: dict[str, tuple[str, str]], criteria_section: dict[str, Any],
                 parquet: Path, csv: Path, markdown: Path, plot: Path, eligible_path: Path) -> pd.DataFrame:
    """The task survey (no intervention and skyline per task) and the eligibility list (`caft.survey`)."""
    criteria = SurveyCriteria.from_config(criteria_section)
    metrics = pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True)
    table = survey_table(aggregate(metrics), concepts, criteria)
    meta = provenance("survey", criteria_section, runs=len(metrics_paths))
    write_parquet(table, parquet, meta)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown) as tmp:
        tmp.write_text(survey_markdown(table), encoding="utf-8")
    plot_survey(table, criteria, plot)
    record = eligibility(table, criteria)
    write_json(record, eligible_path)
    log.info("eligible: %s", record["eligible"] or "none")
    return table


def set_threads(threads: int) -> None:
    """Use exactly the cores Snakemake granted the job."""
    torch.set_num_threads(max(1, int(threads)))
