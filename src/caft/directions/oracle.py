"""The oracle bound: directions of the spurious concept fitted *with its labels*.

CAFT must find the unwanted concept without labels. To know what the best linear erasure of that
concept could do at all, this module fits it with labels, and the workflow trains with it ablated
exactly like a CAFT condition (`oracle/mean-diff`, `oracle/leace`). It is a diagnostic, never a CAFT
result: if oracle erasure does not lift OOD accuracy, no unsupervised selection will.

On D_amb the spurious label equals the intended one, so erasing it would erase the target too. The
labels are fitted on a *decorrelated* pool instead: D_amb examples (where the shortcut agrees with the
intended rule) and skyline examples (built from the same training examples, where it disagrees), in
equal numbers. The label is the letter the shortcut points to; the representation is the residual at
the last prompt position, where the answer is read out, of every configured layer. Erasers:

- ``mean-diff``: the unit difference of the two class means, projected out around the pool mean;
- ``leace``: LEACE (Belrose et al. 2023, EleutherAI's ``concept-erasure``), the least-squares
  eraser h ← h − ((h − μ) R) Qᵀ, an oblique projection that removes every linear trace of the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from caft.ablation.specs import InterventionSpec
from caft.config import SectionConfig
from caft.data.tasks import purpose_rng
from caft.errors import DataError
from caft.model.hooks import capture_residuals, run_decoder
from caft.model.prompts import encode_prompts

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ERASERS = ("mean-diff", "leace")


@dataclass(frozen=True)
class OracleConfig(SectionConfig):
    """The `oracle` section: where and on whose residuals the shortcut's label is fitted and erased."""

    SECTION: ClassVar[str] = "oracle"

    layers: str | list[int]
    model: str
    positions: str
    max_examples: int
    batch_size: int
    seed: int


def decorrelated_pool(train: pd.DataFrame, skyline: pd.DataFrame, intended: str, spurious: str, seed: int,
                      max_examples: int) -> pd.DataFrame:
    """Equal numbers of examples where the shortcut's letter agrees and disagrees with the intended one,
    drawn (seeded) from D_amb and the skyline set: columns ``prompt``, ``intended``, ``spurious``."""
    for name, table in (("train", train), ("skyline", skyline)):
        missing = {"prompt", intended, spurious} - set(table.columns)
        if missing:
            raise DataError(f"oracle: the {name} split lacks column(s) {sorted(missing)}")
    pool = pd.concat([train, skyline], ignore_index=True).loc[:, ["prompt", intended, spurious]]
    pool.columns = ["prompt", "intended", "spurious"]
    agree = pool.index[pool["intended"] == pool["spurious"]].to_numpy()
    disagree = pool.index[pool["intended"] != pool["spurious"]].to_numpy()
    n = min(len(agree), len(disagree), max_examples // 2)
    if n < 2:
        raise DataError(f"oracle: {len(agree)} agreeing and {len(disagree)} disagreeing examples; need ≥ 2 of each")
    rng = purpose_rng(seed, "oracle_pool")
    rows = np.concatenate([rng.choice(agree, n, replace=False), rng.choice(disagree, n, replace=False)])
    return pool.loc[np.sort(rows)].reset_index(drop=True)


def last_position_residuals(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                            layers: Sequence[int], batch_size: int) -> dict[int, torch.Tensor]:
    """Block outputs at each prompt's last token (prompts are left-padded): {layer: [n, d] float32}."""
    rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.inference_mode(), capture_residuals(model, layers) as captured:
        for start in tqdm(range(0, len(prompts), batch_size), desc="oracle residuals", unit="batch"):
            batch = encode_prompts(tokenizer, prompts[start:start + batch_size])
            run_decoder(model, batch["input_ids"], batch["attention_mask"], stop_after=max(layers))
            for layer in layers:
                rows[layer].append(captured[layer][:, -1, :].cpu())
    return {layer: torch.cat(parts) for layer, parts in rows.items()}


def fit_eraser(residuals: dict[int, torch.Tensor], labels: np.ndarray, eraser: str,
               provenance: dict, positions: str = "last") -> InterventionSpec:
    """One projection spec erasing the binary ``labels`` (True/False per row) at every layer, applied at
    ``positions``: by default only the last one, where it was fitted (elsewhere, e.g. at BOS, the residuals
    are nothing like the pool, and an oblique projection fitted on the pool can move them far)."""
    if eraser not in ERASERS:
        raise DataError(f"oracle: eraser must be one of {list(ERASERS)}, got {eraser!r}")
    z = torch.as_tensor(labels, dtype=torch.float64)
    bases, readouts, centers = {}, {}, {}
    for layer, h in residuals.items():
        x = h.to(torch.float64)
        if eraser == "mean-diff":
            direction = x[z == 1].mean(0) - x[z == 0].mean(0)
            bases[layer] = (direction / direction.norm()).unsqueeze(1)
            centers[layer] = x.mean(0)
        else:
            from concept_erasure import LeaceFitter

            fitter = LeaceFitter(x.shape[1], 1, dtype=torch.float64)
            fitter.update(x, z.unsqueeze(1))
            fitted = fitter.eraser
            bases[layer] = fitted.proj_left
            readouts[layer] = fitted.proj_right.T
            centers[layer] = fitted.bias
    return InterventionSpec("projection", bases=bases, centers=centers, readouts=readouts, provenance=provenance,
                            positions=positions)


def _class_means(h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean residual of the examples with and without the label, in float64."""
    x = h.to(torch.float64)
    return x[z].mean(0), x[~z].mean(0)


def label_accuracy(residuals: dict[int, torch.Tensor], labels: np.ndarray) -> dict[int, float]:
    """How well the nearest class mean reads the label at each layer (in-sample): how present the concept is."""
    z = torch.as_tensor(labels)
    accuracy = {}
    for layer, h in residuals.items():
        with_label, without = _class_means(h, z)
        scores = (h.to(torch.float64) - (with_label + without) / 2) @ (with_label - without)
        accuracy[layer] = float(((scores > 0) == z).double().mean())
    return accuracy


def class_mean_gap(residuals: dict[int, torch.Tensor], labels: np.ndarray) -> dict[int, float]:
    """|mean(h | label) − mean(h | not label)| per layer: zero after an eraser removed the label linearly."""
    z = torch.as_tensor(labels)
    gaps = {}
    for layer, h in residuals.items():
        with_label, without = _class_means(h, z)
        gaps[layer] = float((with_label - without).norm())
    return gaps