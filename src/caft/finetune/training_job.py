"""The skeleton both halves' fine-tuning stages share: read the spec and the training table, load a fresh
base model, resolve the precision, train resumably, save, and write the step log and the run's metadata."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from caft.ablation.specs import InterventionSpec, load_spec
from caft.artifacts import file_digest, package_versions, write_json
from caft.finetune.engine import Recipe, write_history
from caft.model.loading import load_checkpoint
from caft.model.precision import resolve_precision

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    Save = Callable[[torch.nn.Module, PreTrainedTokenizerBase], object]
    """``save(model, tokenizer)``: writes the trained model or its adapters."""

Fit = Callable[..., tuple[torch.nn.Module, list[dict[str, Any]]]]
"""``fit(model, tokenizer, table, cfg, seed, spec=, mode=, resume_dir=, spec_digest=)``: `train` or `sft`."""


def training_job(
    fit: Fit,
    save: Save,
    cfg: Recipe,
    section: str,
    base_dir: Path,
    dtype: str,
    train_path: Path,
    spec_path: Path | None,
    seed: int,
    mode: str,
    out_dir: Path,
    log_path: Path,
    meta_path: Path,
    meta: dict[str, Any],
    **fit_args: Any,
) -> None:
    """One run from a fresh copy of the base model: its resume state lives beside ``out_dir`` until the
    result is saved; ``meta`` (the run's key and whatever the half adds) goes into the run's JSON."""
    spec: InterventionSpec | None = load_spec(spec_path) if spec_path else None
    spec_digest = file_digest(spec_path) if spec_path else ""
    table = pd.read_parquet(train_path)
    model: PreTrainedModel
    model, tokenizer = load_checkpoint(base_dir, dtype)
    requested = cfg.precision
    cfg = dataclasses.replace(cfg, precision=resolve_precision(requested, model.device, f"{section}.precision"))
    resume_dir = out_dir.with_name(out_dir.name + ".resume")
    start = time.perf_counter()
    trained, history = fit(model, tokenizer, table, cfg, seed, spec=spec, mode=mode, resume_dir=resume_dir,
                           spec_digest=spec_digest, **fit_args)
    save(trained, tokenizer)
    write_history(history, log_path)
    write_json({
        **meta, "seed": seed, "finetune": dataclasses.asdict(cfg), "precision_requested": requested,
        "mode": mode if spec else None,
        "spec": {"path": str(spec_path), "sha256": spec_digest, "provenance": spec.provenance} if spec else None,
        "train_examples": len(table), "steps": len(history), "seconds": round(time.perf_counter() - start, 1),
        "final_loss": history[-1]["loss"], "versions": package_versions(),
    }, meta_path)
    shutil.rmtree(resume_dir, ignore_errors=True)
