"""The `auto` precision: a fixed choice passes through; auto follows the measured bfloat16 speed."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from caft.finetune.training import TrainConfig
from caft.model import precision
from caft.model.precision import cpu_bf16_speedup, resolve_precision
from tests.test_training import run_finetune


@pytest.mark.parametrize("fixed", ["float32", "bf16-autocast", "bf16"])
def test_a_fixed_precision_is_kept_without_measuring(fixed, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("measured a fixed precision"))
    assert resolve_precision(fixed, torch.device("cpu"), "finetune.precision") == fixed


@pytest.mark.parametrize(("speedup", "chosen"), [(2.1, "bf16-autocast"), (1.5, "bf16-autocast"),
                                                 (1.2, "float32"), (0.007, "float32")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_is_clearly_faster(speedup, chosen, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    with caplog.at_level(logging.INFO, logger="caft.model.precision"):
        assert resolve_precision("auto", torch.device("cpu"), "evaluation.precision") == chosen
    assert f"evaluation.precision: auto → {chosen}" in caplog.text and f"{speedup:.2f}×" in caplog.text


def test_auto_on_a_non_cuda_accelerator_is_float32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("timed the CPU for an mps model"))
    assert resolve_precision("auto", torch.device("mps"), "finetune.precision") == "float32"


def test_the_cpu_probe_measures_a_positive_ratio():
    ratio = cpu_bf16_speedup(size=64, repeats=2)
    assert math.isfinite(ratio) and ratio > 0


def test_auto_is_a_valid_recipe_precision_and_run_json_records_the_choice(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.01)
    assert TrainConfig.from_config({"precision": "auto", "batch_size": 8}, "frames").precision == "auto"
    section = {"lr": 3e-3, "batch_size": 8, "epochs": {"frames": 1}, "precision": "auto"}
    run = run_finetune(tiny_model_dir, tmp_path, "auto", section)
    meta = json.loads((run / "run.json").read_text())
    assert meta["finetune"]["precision"] == "float32" and meta["precision_requested"] == "auto"
    # the resolved run is the float32 run, step for step
    reference = run_finetune(tiny_model_dir, tmp_path, "float32", {**section, "precision": "float32"})
    losses = [[json.loads(line)["loss"] for line in (r / "train_log.jsonl").read_text().splitlines()]
              for r in (run, reference)]
    assert losses[0] == losses[1]
