"""Residual-stream capture and streaming moments of per-token activation differences (DESIGN §1, step 1).

PCA of the differences tuned − base needs only, per layer, the token count, Σx and Σxxᵀ. These are
accumulated batch by batch, so memory is O(d²) per layer however many tokens D_amb holds, and partial
results from several jobs can be merged. The residual stream after block L is the output of
``decoder_layers(model)[L]``; BOS (huge norm on Gemma) and padding are masked out of the statistics.

Moments are exchanged between stages as one ``.safetensors`` file (tensors + JSON metadata), never a
pickle; `save_tensors`/`load_tensors` are the shared writer/reader that PCA components use too.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from caft.artifacts import atomic_path
from caft.errors import ConfigError, DataError
from caft.lm import encode_prompts
from caft.models import decoder_layers, hidden_size, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MOMENTS_FORMAT = "caft.moments/1"
"""Stored in every moments file, so that an unrelated safetensors file is rejected by name."""

_MOMENT_NAME = re.compile(r"^layer_(\d+)\.(count|sum|outer)$")


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


def _hidden_states(output: Any, layer: int) -> torch.Tensor:
    """The residual stream from a block's output: a tensor (transformers 5) or a tuple's element 0."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(
        f"decoder layer {layer} returned {type(output).__name__}; expected a tensor or a tuple whose "
        "first element is the hidden states"
    )


def check_layers(model: torch.nn.Module, layers: Sequence[int]) -> list[int]:
    """Sorted distinct layer indices, each a valid decoder block of ``model``."""
    n_layers = num_layers(model)
    bad = [layer for layer in layers if not isinstance(layer, int) or not 0 <= layer < n_layers]
    if bad or not layers:
        raise ConfigError(
            f"layers must be a non-empty list of integers in 0..{n_layers - 1} "
            f"(the model has {n_layers} decoder layers); got {list(layers)}"
        )
    return sorted(set(layers))


@contextmanager
def capture_residuals(model: torch.nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Yield a dict that each forward pass fills with layer -> block output [B, T, d] (float32, detached).

    The hooks only read; they are removed on exit whatever happens inside the block.
    """
    blocks = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            captured[layer] = _hidden_states(output, layer).detach().float()

        return hook

    handles = []
    try:
        for layer in check_layers(model, layers):
            handles.append(blocks[layer].register_forward_hook(hook_for(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def run_decoder(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Forward through the decoder stack only, for its hooks: the LM head (262k wide on Gemma) is skipped."""
    device = next(model.parameters()).device
    model.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)


def token_mask(
    batch: Mapping[str, torch.Tensor], include_bos: bool, bos_token_id: int | None
) -> torch.Tensor:
    """Bool [B, T]: real tokens (attention mask), without BOS tokens unless ``include_bos``.

    BOS is excluded by default: on Gemma its residual norm dwarfs every other token's and would own
    the top principal components.
    """
    mask = batch["attention_mask"].bool()
    if not include_bos and bos_token_id is not None:
        mask = mask & (batch["input_ids"] != bos_token_id)
    return mask


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
) -> dict[int, StreamingMoments]:
    """Moments of the per-token differences tuned − base of the residual stream, per layer.

    Both models see the same left-padded batches; only masked-in tokens (`token_mask`) count, so
    ``moments[L].count`` is the number of tokens used (the same for every layer).
    """
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
    moments = {layer: StreamingMoments(hidden_size(base), device) for layer in layers}
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
            run_decoder(base, batch["input_ids"], batch["attention_mask"])
            run_decoder(tuned, batch["input_ids"], batch["attention_mask"])
            for layer in layers:
                diff = tuned_acts[layer].to(device) - base_acts[layer]
                moments[layer].update(diff[mask])
            bar.update(len(chunk))
    return moments


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, fmt: str, metadata: dict[str, Any]) -> None:
    """Write ``tensors`` + JSON ``metadata`` as one safetensors file tagged ``fmt``, atomically."""
    from safetensors.torch import save_file

    header = {"format": fmt, "caft": json.dumps(metadata, sort_keys=True)}
    # contiguous clones: safetensors refuses views and tensors sharing storage
    contents = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contents, str(tmp), metadata=header)


def load_tensors(path: str | Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by `save_tensors`; a missing file or another format is a `DataError`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as err:
        raise DataError(f"{path}: cannot read safetensors file: {err}") from err
    if header.get("format") != fmt:
        raise DataError(f"{path}: not a {fmt!r} file (format={header.get('format')!r})")
    try:
        metadata = json.loads(header.get("caft", "{}"))
    except ValueError as err:
        raise DataError(f"{path}: metadata is not valid JSON: {err}") from err
    return tensors, metadata


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
