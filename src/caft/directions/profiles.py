"""What a dashboard card shows beside its windows: how a direction's activation is distributed over the
corpus, what it writes to the logits, and where it fires on the task's own training prompts.

- `ActivationProfiles` watches the activation batches on their way to `top_windows` (one pass over
  the corpus): exact token count, density (> 0), mean, standard deviation, min and max per candidate,
  and a uniform sample of tokens (bottom-k of seeded per-token keys, so the sample does not depend on
  batching) from which the histogram and the quantiles are read. SAE latents are sparse, so their
  histogram counts active tokens only (``active_only``) and the density says how many those are.
- `logit_effects`: the direct path of a unit step along the direction to the logits,
  ``W_U (g ⊙ d)`` with ``g`` the final RMSNorm's gain — the tokens it promotes and suppresses most,
  and its effect on the " A" − " B" logit difference the tasks are scored by. It ignores the norm's
  rescaling and the later blocks: a first look, not an attribution.
- `task_examples`: per-token activations on a few D_amb prompts (never D_OOD).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from caft.directions.windows import ActivationBatch, ScoreFn, WindowsConfig, decode_tokens, latent_activations
from caft.errors import ConfigError, ModelLoadError
from caft.model.prompts import LETTERS, letter_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
BINS = 40
PROFILE_COLUMNS = ("layer", "component", "tokens", "density", "mean", "std", "min", "max", "quantile_levels",
                   "quantiles", "hist_edges", "hist_counts")
EFFECT_COLUMNS = ("layer", "component", "promoted", "promoted_logits", "suppressed", "suppressed_logits",
                  "ab_logit_diff")
EXAMPLE_COLUMNS = ("layer", "component", "example", "row", "tokens", "values")


class ActivationProfiles:
    """Streaming per-candidate statistics of the activations of a corpus pass (see the module docstring)."""

    def __init__(self, sample_size: int = 8192, seed: int = 0, active_only: bool = False) -> None:
        if sample_size < 1:
            raise ConfigError(f"sample_size must be at least 1, got {sample_size}")
        self.sample_size, self.seed, self.active_only = sample_size, seed, active_only
        self._stats: dict[int, dict[str, np.ndarray]] = {}
        self._keys: dict[int, np.ndarray] = {}
        self._sample: dict[int, np.ndarray] = {}

    def observe(self, batches: Iterable[ActivationBatch]) -> Iterator[ActivationBatch]:
        for batch in batches:
            for layer, values in batch.values.items():
                self._add(layer, batch.docs, values)
            yield batch

    def _add(self, layer: int, docs: np.ndarray, values: np.ndarray) -> None:
        real = ~np.isnan(values[..., 0])
        flat = values[real].astype(np.float64)  # [n, m]
        stats = self._stats.setdefault(layer, {
            "tokens": np.zeros(values.shape[2]), "active": np.zeros(values.shape[2]),
            "sum": np.zeros(values.shape[2]), "sumsq": np.zeros(values.shape[2]),
            "min": np.full(values.shape[2], np.inf), "max": np.full(values.shape[2], -np.inf)})
        stats["tokens"] += len(flat)
        stats["active"] += (flat > 0).sum(axis=0)
        stats["sum"] += flat.sum(axis=0)
        stats["sumsq"] += (flat**2).sum(axis=0)
        if len(flat):
            stats["min"] = np.minimum(stats["min"], flat.min(axis=0))
            stats["max"] = np.maximum(stats["max"], flat.max(axis=0))
        keys = np.concatenate([
            np.random.default_rng([self.seed, layer, int(doc), 1]).random(values.shape[1])[real[row]]
            for row, doc in enumerate(docs)
        ]) if len(docs) else np.empty(0)
        all_keys = np.concatenate([self._keys.get(layer, np.empty(0)), keys])
        all_values = np.concatenate([self._sample.get(layer, np.empty((0, values.shape[2]))), flat])
        keep = np.argsort(all_keys, kind="stable")[: self.sample_size]
        self._keys[layer], self._sample[layer] = all_keys[keep], all_values[keep]

    def frame(self) -> pd.DataFrame:
        """One row per (layer, component) in `PROFILE_COLUMNS`; quantiles at `QUANTILES` of the sample
        (of its active tokens when ``active_only``), the histogram over the same values."""
        rows = []
        for layer in sorted(self._stats):
            stats, sample = self._stats[layer], self._sample[layer]
            for component in range(len(stats["tokens"])):
                count = stats["tokens"][component]
                mean = stats["sum"][component] / max(count, 1)
                variance = max(stats["sumsq"][component] / max(count, 1) - mean**2, 0.0)
                shown = sample[:, component]
                if self.active_only:
                    shown = shown[shown > 0]
                counts, edges = (np.histogram(shown, bins=BINS) if len(shown) else (np.zeros(0), np.zeros(0)))
                rows.append({
                    "layer": layer, "component": component, "tokens": int(count),
                    "density": float(stats["active"][component] / max(count, 1)),
                    "mean": float(mean), "std": float(np.sqrt(variance)),
                    "min": float(stats["min"][component]), "max": float(stats["max"][component]),
                    "quantile_levels": list(QUANTILES),
                    "quantiles": np.quantile(shown, QUANTILES).tolist() if len(shown) else [],
                    "hist_edges": edges.tolist(), "hist_counts": counts.astype(int).tolist(),
                })
        return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def final_norm_gain(model: PreTrainedModel) -> torch.Tensor:
    """The elementwise gain of the final RMSNorm (``norm(1) = g``: the RMS of a vector of ones is 1)."""
    norm = getattr(getattr(model, "model", None), "norm", None)
    if norm is None:
        raise ModelLoadError(f"{type(model).__name__}: no final norm at model.model.norm")
    width = model.get_output_embeddings().weight.shape[1]
    with torch.no_grad():
        return norm(torch.ones(1, width, dtype=model.get_output_embeddings().weight.dtype))[0].float()


def logit_effects(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  directions: Mapping[int, torch.Tensor], k: int = 8) -> pd.DataFrame:
    """Per (layer, column of the [d, m] directions, unit-normalised): the ``k`` tokens whose logit a unit
    step along it raises and lowers most through the unembedding, and its " A" − " B" logit difference."""
    unembed = model.get_output_embeddings().weight.detach().float()
    gain = final_norm_gain(model)
    letters = letter_token_ids(tokenizer)
    ab = unembed[letters[LETTERS[0]]] - unembed[letters[LETTERS[1]]]
    rows = []
    for layer in sorted(directions):
        unit = directions[layer].float() / directions[layer].float().norm(dim=0).clamp_min(1e-12)
        written = gain[:, None] * unit  # [d, m]
        with torch.no_grad():
            logits = unembed @ written  # [V, m]
            top = logits.topk(k, dim=0)
            bottom = (-logits).topk(k, dim=0)
        texts = _texts(tokenizer, torch.cat([top.indices.flatten(), bottom.indices.flatten()]).tolist())
        for column in range(written.shape[1]):
            rows.append({
                "layer": layer, "component": column,
                "promoted": [texts[i] for i in top.indices[:, column].tolist()],
                "promoted_logits": top.values[:, column].tolist(),
                "suppressed": [texts[i] for i in bottom.indices[:, column].tolist()],
                "suppressed_logits": (-bottom.values[:, column]).tolist(),
                "ab_logit_diff": float(ab @ written[:, column]),
            })
    return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))


def _texts(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> dict[int, str]:
    return {i: tokenizer.decode([i]) for i in set(ids)}


def task_examples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  rows: Sequence[int], score_fn: ScoreFn, layers: Sequence[int], batch_size: int) -> pd.DataFrame:
    """Per-token activations of every candidate on the given training prompts (``rows`` are their row
    numbers in D_amb, kept for the audit trail); one row per (layer, component, example)."""
    docs = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    out = []
    for batch in latent_activations(model, tokenizer, docs, score_fn, layers, batch_size):
        for layer, values in batch.values.items():
            for offset, doc in enumerate(batch.docs):
                length = int(batch.lengths[offset])
                tokens = decode_tokens(tokenizer, batch.input_ids[offset, :length].tolist())
                for component in range(values.shape[2]):
                    out.append({"layer": layer, "component": component, "example": int(doc),
                                "row": int(rows[doc]), "tokens": tokens,
                                "values": values[offset, :length, component].astype(float).tolist()})
    frame = pd.DataFrame(out, columns=list(EXAMPLE_COLUMNS))
    return frame.sort_values(["layer", "component", "example"], kind="stable").reset_index(drop=True)


def example_rows(n_rows: int, count: int, seed: int) -> list[int]:
    """``count`` D_amb row numbers drawn without replacement (seeded), ascending."""
    count = min(count, n_rows)
    return sorted(np.random.default_rng([seed, 2]).choice(n_rows, size=count, replace=False).tolist())


def training_examples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train_split: Path,
                      score_fn: ScoreFn, layers: Sequence[int], cfg: WindowsConfig) -> pd.DataFrame:
    """`task_examples` on ``cfg.task_examples`` seeded prompts of the D_amb split at ``train_split``."""
    prompts = pd.read_parquet(train_split)["prompt"]
    if cfg.task_examples == 0:
        return pd.DataFrame(columns=list(EXAMPLE_COLUMNS))
    rows = example_rows(len(prompts), cfg.task_examples, cfg.seed)
    return task_examples(model, tokenizer, [prompts.iloc[row] for row in rows], rows, score_fn, layers,
                         cfg.batch_size)


def card_profiles(profiles: pd.DataFrame, effects: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """Profiles and logit effects side by side, with each card's task examples as lists: the one table
    a dashboard reads (``component`` is the column of the score function; callers rename it)."""
    keys = ["layer", "component"]
    merged = profiles.merge(effects, on=keys, how="left")
    grouped = examples.groupby(keys, sort=False).agg(example_rows=("row", list), example_tokens=("tokens", list),
                                                     example_values=("values", list)).reset_index()
    return merged.merge(grouped, on=keys, how="left")
