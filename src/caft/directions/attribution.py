"""SAE attribution patching over D_amb, and its check against exact ablations.

For a prompt, the metric is m = logit(correct letter) − logit(other letter) at the last position (prompts
are left-padded, so that is position −1 of every row). With h_L the output of decoder block L (the
residual stream), g_L = ∂m/∂h_L and z = sae.encode(h_L), latent j's attribution is

    effect_j = Σ_positions z_j · (W_dec[j] · g_L),

the first-order estimate of the *drop* in m if latent j were zeroed at those positions (the sign
convention of CAFT's ``compute_diff_effect``: a positive effect means the latent pushes m up). BOS and
padding positions are left out. One forward and one backward pass per batch serve every layer: the
block outputs are captured by forward hooks, the SAEs are never spliced into the model, and the model's
parameters are frozen for the duration, so neither its outputs nor its ``.grad`` change.

`exact_effects` measures the same quantity without linearisation — ablate one latent at one layer
(h ← h − z_j(h) W_dec[j], at the positions the estimate counts) and rerun — and `validate_estimates`
compares the two.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from caft.ablation.ablate import LatentAblation, check_sae, decoder_rows
from caft.config import SectionConfig
from caft.errors import ConfigError, DataError
from caft.model.hooks import block_hooks, check_layers, residuals_for_grad
from caft.model.loading import hidden_size
from caft.model.prompts import encode_prompts, last_position_logits, token_mask

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

SCORE_COLUMNS = ("layer", "latent", "effect", "mean_activation", "firing_rate")


@dataclass(frozen=True)
class AttributionConfig(SectionConfig):
    """The `attribution` section: whose gradients, how many prompts, the top pool and the exact check."""

    SECTION: ClassVar[str] = "attribution"

    model: str
    batch_size: int
    top_n: int
    validate_top: int
    max_prompts: int | None
    validate_prompts: int


@dataclass(frozen=True)
class _Prompts:
    """Validated prompts with their answer token ids (int64 tensors on the CPU)."""

    texts: list[str]
    correct: torch.Tensor
    other: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)

    def batches(self, batch_size: int) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.texts), batch_size):
            stop = start + batch_size
            yield self.texts[start:stop], self.correct[start:stop], self.other[start:stop]


@dataclass
class _LayerTotals:
    """Running sums for one layer's SAE over the masked-in tokens."""

    rows: torch.Tensor
    effect: torch.Tensor
    activation: torch.Tensor
    fired: torch.Tensor

    @classmethod
    def for_sae(cls, sae: SAE) -> _LayerTotals:
        d_sae = sae.cfg.d_sae
        rows = decoder_rows(sae, torch.arange(d_sae, device=sae.W_dec.device))
        zeros = torch.zeros(d_sae, dtype=torch.float32, device=rows.device)
        return cls(rows, zeros, zeros.clone(), torch.zeros(d_sae, dtype=torch.int64, device=rows.device))


def _check_prompts(
    prompts: Sequence[str], correct_ids: Sequence[int], other_ids: Sequence[int], batch_size: int
) -> _Prompts:
    texts = list(prompts)
    if not texts:
        raise DataError("no prompts to score")
    if len(correct_ids) != len(texts) or len(other_ids) != len(texts):
        raise DataError(
            f"got {len(texts)} prompts but {len(correct_ids)} correct and {len(other_ids)} other answer ids; "
            "need one of each per prompt"
        )
    not_text = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if not_text:
        raise DataError(f"prompts must be strings; row(s) {not_text[:5]} are not")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    correct = _token_ids(correct_ids, "correct")
    other = _token_ids(other_ids, "other")
    same = (correct == other).nonzero().flatten().tolist()
    if same:
        raise DataError(f"row(s) {same[:5]}: the correct and the other answer are the same token")
    return _Prompts(texts, correct, other)


def _token_ids(ids: Sequence[int], what: str) -> torch.Tensor:
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        ids = ids.tolist()
    values = [int(i) if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else -1 for i in ids]
    bad = [row for row, value in enumerate(values) if value < 0]
    if bad:
        raise DataError(f"{what} answer ids must be non-negative integers; row(s) {bad[:5]} are not")
    return torch.tensor(values, dtype=torch.int64)


def _check_saes(model: torch.nn.Module, saes: Mapping[int, SAE]) -> dict[int, SAE]:
    """SAEs by layer, ascending; each must fit a valid block and decode affinely in z."""
    layers = check_layers(model, list(saes))
    width = hidden_size(model)
    for layer in layers:
        check_sae(saes[layer], f"layer {layer}")
        d_in = saes[layer].cfg.d_in
        if d_in != width:
            raise ConfigError(f"layer {layer}: the SAE has d_in {d_in}, but the model's hidden size is {width}")
    return {layer: saes[layer] for layer in layers}


def _check_pairs(latents: Sequence[tuple[int, int]], saes: Mapping[int, SAE]) -> list[tuple[int, int]]:
    pairs = []
    for pair in latents:
        layer, latent = (int(value) for value in pair)
        if layer not in saes:
            raise ConfigError(f"latent ({layer}, {latent}): no SAE for layer {layer} (SAEs at {sorted(saes)})")
        if not 0 <= latent < saes[layer].cfg.d_sae:
            raise ConfigError(
                f"latent ({layer}, {latent}): out of range for the layer's SAE of width {saes[layer].cfg.d_sae}"
            )
        pairs.append((layer, latent))
    return pairs


@contextmanager
def _frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while open; every module's mode and flag restored on exit."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        model.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, mode in modes:
            module.training = mode


def _metric(
    model: PreTrainedModel, batch: BatchEncoding, correct: torch.Tensor, other: torch.Tensor
) -> torch.Tensor:
    """m per row, float32: logit(correct) − logit(other) at the last position."""
    logits = last_position_logits(model, batch).float()
    vocab = logits.shape[-1]
    if int(max(correct.max(), other.max())) >= vocab:
        raise DataError(f"answer token ids must be below the model's vocabulary size {vocab}")
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, correct.to(logits.device)] - logits[rows, other.to(logits.device)]


def dense_latents(sae: SAE, h: torch.Tensor) -> torch.Tensor:
    """Dense float32 latent activations of the rows of ``h``."""
    z = sae.encode(h.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype))
    return (z.to_dense() if z.is_sparse else z).float()


@torch.no_grad()
def _accumulate(totals: _LayerTotals, sae: SAE, h: torch.Tensor, grad: torch.Tensor) -> None:
    """Add the masked-in tokens' z_j · (W_dec[j] · g) for every latent at once: [n, d] @ [d, d_sae]."""
    z = dense_latents(sae, h)
    projected = grad.to(device=totals.rows.device, dtype=torch.float32) @ totals.rows.T
    totals.effect += (z * projected).sum(dim=0)
    totals.activation += z.sum(dim=0)
    totals.fired += (z > 0).sum(dim=0)


def attribution_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    correct_ids: Sequence[int],
    other_ids: Sequence[int],
    saes: Mapping[int, SAE],
    batch_size: int,
    progress: bool = False,
) -> pd.DataFrame:
    """Attribution of every latent of every SAE (``{layer: SAE}``) to m, one row per (layer, latent).

    Columns: ``layer``, ``latent``; ``effect`` — the mean over prompts of the per-prompt sum over
    positions of z_j · (W_dec[j] · ∂m/∂h), the estimated drop in m if the latent were zeroed (positive:
    the latent favours the correct answer); ``mean_activation`` — mean z_j over the scored tokens;
    ``firing_rate`` — fraction of scored tokens with z_j > 0. Scored tokens exclude BOS and padding.
    Scores are float32 (accumulated in float32 whatever the model's dtype). ``frame.attrs`` holds
    ``mean_metric`` (mean m over prompts), ``prompts`` and ``tokens`` (the scored-token count).
    """
    checked = _check_prompts(prompts, correct_ids, other_ids, batch_size)

    def batches() -> Iterator[MetricBatch]:
        for texts, correct, other in checked.batches(batch_size):
            batch = encode_prompts(tokenizer, texts)
            positions = token_mask(batch, include_bos=False, bos_token_id=tokenizer.bos_token_id)
            yield MetricBatch(positions, partial(_metric, model, batch, correct, other))

    return latent_attribution(model, saes, batches(), len(checked), progress)


@dataclass(frozen=True)
class MetricBatch:
    """One batch for `latent_attribution`: where latents count, and the forward pass giving m per row."""

    positions: torch.Tensor
    """bool [batch, tokens]: the positions whose latents are summed (no BOS, no padding)."""
    metric: Callable[[], torch.Tensor]
    """Runs the model on the batch and returns m per row, differentiable."""


def latent_attribution(model: PreTrainedModel, saes: Mapping[int, SAE], batches: Iterable[MetricBatch], rows: int,
                       progress: bool = False) -> pd.DataFrame:
    """`attribution_scores` for any per-row metric m: the same columns and ``attrs``, ``effect`` the mean
    over the `rows` metric rows of Σ_positions z_j · (W_dec[j] · ∂m/∂h)."""
    saes = _check_saes(model, saes)
    layers = list(saes)
    totals = {layer: _LayerTotals.for_sae(sae) for layer, sae in saes.items()}
    device = next(model.parameters()).device
    metric_sum, tokens = 0.0, 0
    with (
        _frozen_eval(model),
        torch.enable_grad(),
        residuals_for_grad(model, layers) as captured,
        tqdm(total=rows, desc="attribution", unit="row", file=sys.stderr, disable=not progress) as bar,
    ):
        for batch in batches:
            captured.clear()
            mask = batch.positions.to(device)
            metric = batch.metric()
            hidden = [captured[layer] for layer in layers]
            grads = torch.autograd.grad(metric.sum(), hidden, allow_unused=True)
            for layer, h, grad in zip(layers, hidden, grads, strict=True):
                grad = torch.zeros_like(h) if grad is None else grad
                _accumulate(totals[layer], saes[layer], h.detach()[mask], grad[mask])
            metric_sum += float(metric.detach().sum())
            tokens += int(mask.sum())
            bar.update(len(metric))
    if tokens == 0:
        raise DataError("every token of every prompt is BOS or padding: nothing to score")
    return _score_frame(totals, rows, tokens, metric_sum / rows)


def _score_frame(totals: Mapping[int, _LayerTotals], prompts: int, tokens: int, mean_metric: float) -> pd.DataFrame:
    parts = []
    for layer, layer_totals in totals.items():
        d_sae = layer_totals.effect.shape[0]
        parts.append(
            pd.DataFrame(
                {
                    "layer": np.full(d_sae, layer, dtype=np.int64),
                    "latent": np.arange(d_sae, dtype=np.int64),
                    "effect": (layer_totals.effect / prompts).cpu().numpy(),
                    "mean_activation": (layer_totals.activation / tokens).cpu().numpy(),
                    "firing_rate": (layer_totals.fired.double() / tokens).float().cpu().numpy(),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs.update(mean_metric=mean_metric, prompts=prompts, tokens=tokens)
    return frame


def rank_scores(frame: pd.DataFrame, top_n: int = 100) -> pd.DataFrame:
    """A copy of ``frame`` (same row order) with ``rank``, ``layer_rank`` and ``top`` added.

    Ranks are by *signed* effect, 0 = largest positive, over all layers (``rank``) and within the
    row's layer (``layer_rank``); equal effects rank by (layer, latent), NaN effects last. ``top`` marks
    the ``top_n`` best ranks, so negative effects enter only after every larger one.
    """
    missing = {"layer", "latent", "effect"} - set(frame.columns)
    if missing:
        raise DataError(f"the score table lacks column(s) {sorted(missing)}")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise ConfigError(f"top_n must be a non-negative integer, got {top_n!r}")
    order = frame.sort_values(
        ["effect", "layer", "latent"], ascending=[False, True, True], kind="mergesort", na_position="last"
    )
    ranked = frame.copy()
    ranked["rank"] = pd.Series(np.arange(len(order), dtype=np.int64), index=order.index)
    ranked["layer_rank"] = order.groupby("layer", sort=False).cumcount().astype(np.int64)
    ranked["top"] = ranked["rank"] < top_n
    return ranked


def _masked_ablation(ablate: LatentAblation, mask: torch.Tensor) -> Any:
    """The latent ablation at the scored positions only (BOS and padding keep their hidden states)."""
    keep = mask[..., None]

    def apply(h: torch.Tensor) -> torch.Tensor:
        return torch.where(keep.to(h.device), ablate(h), h)

    return apply


def exact_effects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    correct_ids: Sequence[int],
    other_ids: Sequence[int],
    saes: Mapping[int, SAE],
    latents: Sequence[tuple[int, int]],
    batch_size: int,
    progress: bool = False,
) -> np.ndarray:
    """Mean over prompts of m_clean − m_ablated for each (layer, latent), float64 ``[len(latents)]``.

    The ablation is h ← h − z_j(h) W_dec[j] at that one layer, at the positions `attribution_scores`
    counts (BOS and padding untouched), so it is exactly what the attribution linearises. Costs one
    forward pass per batch plus one per (batch, latent).
    """
    checked = _check_prompts(prompts, correct_ids, other_ids, batch_size)
    saes = _check_saes(model, saes)
    ablations = [
        (layer, LatentAblation(saes[layer], [latent], f"layer {layer}"))
        for layer, latent in _check_pairs(latents, saes)
    ]
    device = next(model.parameters()).device
    totals = np.zeros(len(ablations), dtype=np.float64)
    with (
        _frozen_eval(model),
        torch.inference_mode(),
        tqdm(total=len(checked), desc="exact effects", unit="prompt", file=sys.stderr, disable=not progress) as bar,
    ):
        for texts, correct, other in checked.batches(batch_size):
            batch = encode_prompts(tokenizer, texts)
            mask = token_mask(batch, include_bos=False, bos_token_id=tokenizer.bos_token_id).to(device)
            clean = _metric(model, batch, correct, other)
            for index, (layer, ablate) in enumerate(ablations):
                with block_hooks(model, {layer: _masked_ablation(ablate, mask)}):
                    ablated = _metric(model, batch, correct, other)
                totals[index] += float((clean - ablated).sum())
            bar.update(len(texts))
    return totals / len(checked)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, NaN when it is undefined (fewer than 2 points, or a constant input)."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def validate_estimates(
    frame: pd.DataFrame, exact: np.ndarray, latents: Sequence[tuple[int, int]]
) -> tuple[pd.DataFrame, dict[str, float | int]]:
    """A copy of ``frame`` with ``exact_effect`` (NaN where not validated), and how well ``effect`` fits it.

    ``exact[i]`` is the exact effect of ``latents[i]`` (from `exact_effects`). The summary holds
    ``validated`` (count), ``pearson`` and ``spearman`` correlations of estimate vs exact and
    ``max_abs_error`` = max |effect − exact_effect|; each is NaN when undefined.
    """
    pairs = [(int(layer), int(latent)) for layer, latent in latents]
    values = np.asarray(exact, dtype=np.float64)
    if values.shape != (len(pairs),):
        raise DataError(f"got {values.size} exact effects for {len(pairs)} latents")
    if len(set(pairs)) != len(pairs):
        raise DataError("the validated latents contain duplicate (layer, latent) pairs")
    index = pd.MultiIndex.from_frame(frame[["layer", "latent"]])
    if index.has_duplicates:
        raise DataError("the score table has duplicate (layer, latent) rows")
    positions = index.get_indexer(pairs) if pairs else np.zeros(0, dtype=np.int64)
    unknown = [pair for pair, position in zip(pairs, positions, strict=True) if position < 0]
    if unknown:
        raise DataError(f"latents {unknown[:5]} are not in the score table")
    validated = frame.copy()
    exact_column = np.full(len(frame), np.nan)
    exact_column[positions] = values
    validated["exact_effect"] = exact_column
    estimates = frame["effect"].to_numpy(dtype=np.float64)[positions]
    summary = {
        "validated": len(pairs),
        "pearson": _pearson(estimates, values),
        "spearman": _pearson(pd.Series(estimates).rank().to_numpy(), pd.Series(values).rank().to_numpy()),
        "max_abs_error": float(np.abs(estimates - values).max()) if pairs else float("nan"),
    }
    return validated, summary
