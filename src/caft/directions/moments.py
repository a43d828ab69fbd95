"""Streaming moments of per-token activation differences tuned − base: what PCA needs.

PCA of the differences tuned − base needs only, per layer, the token count, Σx and Σxxᵀ. These are
accumulated batch by batch, so memory is O(d²) per layer however many tokens D_amb holds, and partial
results from several jobs can be merged. The residual stream after block L is the output of
``decoder_layers(model)[L]``; BOS (huge norm on Gemma) and padding are masked out of the statistics.

Moments are exchanged between stages as one ``.safetensors`` file (tensors + JSON metadata), never a
pickle (`caft.artifacts.save_tensors`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import torch
from tqdm.auto import tqdm

from caft.artifacts import load_tensors, save_tensors
from caft.config import SectionConfig
from caft.errors import ConfigError, DataError
from caft.model.hooks import capture_residuals, check_layers, run_decoder
from caft.model.loading import hidden_size, num_layers
from caft.model.prompts import encode_prompts, token_mask

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MOMENTS_FORMAT = "caft.moments/1"
"""Stored in every moments file, so that an unrelated safetensors file is rejected by name."""

_MOMENT_NAME = re.compile(r"^layer_(\d+)\.(count|sum|outer)$")


@dataclass(frozen=True)
class PcaMomentsConfig(SectionConfig):
    """The `pca` keys the difference moments depend on (not `components`: refitting must not rerun the models)."""

    SECTION: ClassVar[str] = "pca"

    layers: str | list[int]
    include_bos: bool
    batch_size: int
    pretune_seed: int


class StreamingMoments:
    """Count, Σx and Σxxᵀ of d-dimensional vectors, accumulated in float64.

    float64 because the covariance is computed as E[xxᵀ] − μμᵀ (the reference's formula), which loses
    every digit float32 has when the mean is large against the spread. The covariance is the
    *population* covariance (divided by the count, not count − 1): PCA only needs its eigenvectors and
    variance ratios, which the normalisation does not change.
    """

    def __init__(self, dim: int, device: str | torch.device = "cpu") -> None:
        if dim < 1:
            raise ConfigError(f"moments need a positive dimension, got {dim}")
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    @property
    def dim(self) -> int:
        return self.sum.shape[0]

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` [n, d] (any float dtype or device; converted to float64 here)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"moments of dimension {self.dim} need rows [n, {self.dim}], got {tuple(x.shape)}")
        x = x.detach().to(device=self.sum.device, dtype=torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(dim=0)
        self.outer.addmm_(x.T, x)

    def merge(self, other: StreamingMoments) -> StreamingMoments:
        """Add another accumulator's vectors to this one (in place); returns self."""
        if other.dim != self.dim:
            raise DataError(f"cannot merge moments of dimension {other.dim} into dimension {self.dim}")
        self.count += other.count
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        return self

    @property
    def mean(self) -> torch.Tensor:
        """μ = Σx / n, float64 [d]."""
        if self.count == 0:
            raise DataError("no vectors were accumulated (every token masked, or no input)")
        return self.sum / self.count

    @property
    def covariance(self) -> torch.Tensor:
        """Population covariance E[xxᵀ] − μμᵀ, float64 [d, d], symmetrised against round-off."""
        mean = self.mean
        cov = self.outer / self.count - torch.outer(mean, mean)
        return (cov + cov.T) / 2

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU tensors ``count`` (int64 scalar), ``sum`` [d], ``outer`` [d, d] for safetensors."""
        return {
            "count": torch.tensor(self.count, dtype=torch.int64),
            "sum": self.sum.cpu(),
            "outer": self.outer.cpu(),
        }

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu"
    ) -> StreamingMoments:
        """Inverse of `state_dict`; shapes are checked so a corrupt file fails here."""
        missing = {"count", "sum", "outer"} - set(state)
        if missing:
            raise DataError(f"moments state lacks {sorted(missing)}")
        total, outer, count = state["sum"], state["outer"], state["count"]
        if total.ndim != 1 or outer.shape != (total.shape[0], total.shape[0]) or count.numel() != 1:
            raise DataError(
                f"inconsistent moments state: count {tuple(count.shape)}, sum {tuple(total.shape)}, "
                f"outer {tuple(outer.shape)}"
            )
        moments = cls(total.shape[0], device)
        moments.count = int(count.item())
        moments.sum.copy_(total)
        moments.outer.copy_(outer)
        return moments


def prompts_with_answers(table: pd.DataFrame) -> list[str]:
    """D_amb texts as the PCA sees them: ``prompt + " " + target`` (e.g. "…Answer: B")."""
    missing = {"prompt", "target"} - set(table.columns)
    if missing:
        raise DataError(f"the task table lacks column(s) {sorted(missing)}")
    return [f"{prompt} {target}" for prompt, target in zip(table["prompt"], table["target"], strict=True)]


def accumulate_differences(
    base: PreTrainedModel,
    tuned: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layers: Sequence[int],
    include_bos: bool,
    batch_size: int,
    progress: bool = False,
    first_positions: Sequence[int] | None = None,
) -> dict[int, StreamingMoments]:
    """Moments of the per-token differences tuned − base of the residual stream, per layer.

    Both models see the same left-padded batches; only masked-in tokens (`token_mask`) count, so
    ``moments[L].count`` is the number of tokens used (the same for every layer). With
    ``first_positions``, text i counts only from its token ``first_positions[i]`` on (the answer tokens
    of a chat response, for the emergent-misalignment PCA).
    """
    layers = check_layers(base, layers)
    device = next(base.parameters()).device
    moments = {layer: StreamingMoments(hidden_size(base), device) for layer in layers}
    for pairs in paired_residuals(base, tuned, tokenizer, texts, layers, include_bos, batch_size, progress,
                                  first_positions):
        for layer, (base_rows, tuned_rows) in pairs.items():
            moments[layer].update(tuned_rows - base_rows)
    return moments


def paired_residuals(
    base: PreTrainedModel,
    tuned: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layers: Sequence[int],
    include_bos: bool,
    batch_size: int,
    progress: bool = False,
    first_positions: Sequence[int] | None = None,
) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Per batch, ``{layer: (base rows, tuned rows)}``: both models' block outputs [n, d] (float32) at the
    same masked-in tokens (`accumulate_differences` says which)."""
    if first_positions is not None and len(first_positions) != len(texts):
        raise DataError(f"{len(first_positions)} first positions for {len(texts)} texts")
    if not texts:
        raise DataError("no texts to run the models on")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if hidden_size(base) != hidden_size(tuned) or num_layers(base) != num_layers(tuned):
        raise ConfigError(
            "the tuned model does not match the base model: hidden size "
            f"{hidden_size(tuned)} vs {hidden_size(base)}, layers {num_layers(tuned)} vs {num_layers(base)}"
        )
    layers = check_layers(base, layers)
    device = next(base.parameters()).device
    with (
        torch.inference_mode(),
        capture_residuals(base, layers) as base_acts,
        capture_residuals(tuned, layers) as tuned_acts,
        tqdm(total=len(texts), desc="activation differences", unit="text", file=sys.stderr,
             disable=not progress) as bar,
    ):
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            batch = encode_prompts(tokenizer, chunk)
            mask = token_mask(batch, include_bos, tokenizer.bos_token_id).to(device)
            if first_positions is not None:
                mask &= _from_positions(batch["attention_mask"], first_positions[start : start + batch_size]).to(device)
            run_decoder(base, batch["input_ids"], batch["attention_mask"], stop_after=layers[-1])
            run_decoder(tuned, batch["input_ids"], batch["attention_mask"], stop_after=layers[-1])
            yield {layer: (base_acts[layer][mask], tuned_acts[layer].to(device)[mask]) for layer in layers}
            bar.update(len(chunk))


def _from_positions(attention_mask: torch.Tensor, firsts: Sequence[int]) -> torch.Tensor:
    """Bool [B, T]: in left-padded rows, the positions at or after each row's own token ``firsts[b]``."""
    width = attention_mask.shape[1]
    starts = width - attention_mask.sum(dim=1) + torch.tensor(list(firsts))
    return torch.arange(width)[None, :] >= starts[:, None]


def save_moments(moments: Mapping[int, StreamingMoments], path: str | Path, metadata: dict[str, Any]) -> None:
    """Tensors ``layer_{L}.count|sum|outer``; ``metadata`` (include_bos, models, provenance) as JSON."""
    tensors = {
        f"layer_{layer}.{name}": tensor
        for layer, layer_moments in moments.items()
        for name, tensor in layer_moments.state_dict().items()
    }
    save_tensors(tensors, path, MOMENTS_FORMAT, metadata)


def load_moments(path: str | Path) -> tuple[dict[int, StreamingMoments], dict[str, Any]]:
    """Inverse of `save_moments`: (layer -> moments on the CPU, metadata)."""
    tensors, metadata = load_tensors(path, MOMENTS_FORMAT)
    states: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        match = _MOMENT_NAME.match(name)
        if match is None:
            raise DataError(f"{path}: unexpected tensor {name!r} in a moments file")
        states.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    try:
        moments = {layer: StreamingMoments.from_state_dict(state) for layer, state in sorted(states.items())}
    except DataError as err:
        raise DataError(f"{path}: {err}") from err
    return moments, metadata
