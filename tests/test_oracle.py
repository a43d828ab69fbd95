"""The oracle bound: a decorrelated pool, and erasers that remove the shortcut's label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from caft.ablation.ablate import ablate_projection
from caft.directions.oracle import decorrelated_pool, fit_eraser, label_accuracy
from caft.errors import DataError


def split(n: int, agree: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    intended = rng.choice(["A", "B"], n)
    spurious = intended if agree else np.where(intended == "A", "B", "A")
    return pd.DataFrame({"prompt": [f"p{seed}-{i}" for i in range(n)], "answer_b": intended, "answer_a": spurious})


def test_pool_has_as_many_agreeing_as_disagreeing_examples_and_is_seeded():
    train, skyline = split(40, True, 0), split(30, False, 1)
    pool = decorrelated_pool(train, skyline, "answer_b", "answer_a", seed=0, max_examples=1000)
    agree = (pool["intended"] == pool["spurious"])
    assert len(pool) == 60 and agree.sum() == 30
    assert decorrelated_pool(train, skyline, "answer_b", "answer_a", 0, 1000).equals(pool)
    assert len(decorrelated_pool(train, skyline, "answer_b", "answer_a", 0, 20)) == 20
    with pytest.raises(DataError, match="lacks column"):
        decorrelated_pool(train, skyline, "target", "answer_a", 0, 100)


def synthetic(n: int = 400, d: int = 16, seed: int = 0) -> tuple[dict[int, torch.Tensor], np.ndarray]:
    """Residuals where the label shifts the mean along a direction and also changes a correlated feature."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, generator=gen) > 0.5
    mixing = 0.3 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) @ mixing
    x[:, 0] += 3.0 * labels
    x += 5.0
    return {2: x.float(), 5: (2 * x).float()}, labels.numpy()


@pytest.mark.parametrize("eraser", ["mean-diff", "leace"])
def test_erasers_remove_the_class_mean_difference(eraser):
    residuals, labels = synthetic()
    assert min(label_accuracy(residuals, labels).values()) > 0.8
    spec = fit_eraser(residuals, labels, eraser, {"test": True})
    assert spec.layers == [2, 5]
    for layer, h in residuals.items():
        erased = ablate_projection(h, spec.bases[layer], spec.centers[layer], spec.readouts.get(layer)).double()
        gap = erased[labels].mean(0) - erased[~labels].mean(0)
        assert gap.abs().max() < 1e-3 * h.abs().max()
    assert bool(spec.readouts) == (eraser == "leace")


def test_both_erasers_leave_no_linear_trace_and_leace_changes_the_residuals_least():
    """For a binary label, any projection that zeroes the cross-covariance leaves no linear predictor of it;
    LEACE is the one that moves the residuals least (in expected squared distance)."""
    residuals, labels = synthetic(n=2000)
    x = residuals[2].double()
    z = torch.as_tensor(labels, dtype=torch.float64)

    def cross_covariance(h: torch.Tensor) -> float:
        return float(((h - h.mean(0)) * (z - z.mean()).unsqueeze(1)).mean(0).norm())

    leace = fit_eraser({2: residuals[2]}, labels, "leace", {})
    mean_diff = fit_eraser({2: residuals[2]}, labels, "mean-diff", {})
    erased = {
        "leace": ablate_projection(x, leace.bases[2], leace.centers[2], leace.readouts[2]),
        "mean-diff": ablate_projection(x, mean_diff.bases[2], mean_diff.centers[2]),
    }
    assert cross_covariance(x) > 0.5
    for h in erased.values():
        assert cross_covariance(h) < 1e-5 * cross_covariance(x)
    change = {name: float(((h - x) ** 2).sum(1).mean()) for name, h in erased.items()}
    assert change["leace"] < 0.9 * change["mean-diff"]
