"""Every hook on a decoder block's output lives here, and every one is removed on exit.

CAFT reads and rewrites the residual stream at the output of decoder block L (``decoder_layers(model)[L]``):
PCA and windows read it, attribution reads it inside the autograd graph, ablation replaces it. Blocks
return a tensor in transformers 5 and a tuple ``(hidden, ...)`` in older releases; taking ``out[0]`` of a
tensor would silently take batch element 0, so both shapes go through `hidden_states` /
`with_hidden_states`. `block_hooks` is the one place that registers hooks, so no stage can leave one
behind after an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from caft.errors import ConfigError, DataError
from caft.model.loading import decoder_layers, num_layers

BlockFn = Callable[[torch.Tensor], "torch.Tensor | None"]
"""Called with a block's hidden states [batch, tokens, d]; returns replacement states, or None to only read."""


def hidden_states(output: Any, layer: int) -> torch.Tensor:
    """The residual stream from a block's output: a tensor (transformers 5) or a tuple's element 0."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(
        f"decoder layer {layer} returned {type(output).__name__}; expected a tensor or a tuple whose "
        "first element is the hidden states"
    )


def with_hidden_states(output: Any, hidden: torch.Tensor) -> Any:
    """`output` with its hidden states replaced, in the shape the block returned."""
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


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


def _hook(fn: BlockFn, layer: int) -> Callable[..., Any]:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        replaced = fn(hidden_states(output, layer))
        return None if replaced is None else with_hidden_states(output, replaced)

    return hook


@contextmanager
def block_hooks(model: torch.nn.Module, fns: Mapping[int, BlockFn]) -> Iterator[None]:
    """Run ``fns[L]`` on the output of decoder block L during every forward pass while open.

    The hooks are registered only after every layer is checked, and removed on exit whatever happens
    inside the block: afterwards the model computes exactly what it computed before.
    """
    blocks = decoder_layers(model)
    layers = check_layers(model, list(fns)) if fns else []
    handles = []
    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(_hook(fns[layer], layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_residuals(model: torch.nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Yield a dict that each forward pass fills with layer -> block output [B, T, d] (float32, detached)."""
    captured: dict[int, torch.Tensor] = {}

    def reader(layer: int) -> BlockFn:
        def read(hidden: torch.Tensor) -> None:
            captured[layer] = hidden.detach().float()

        return read

    with block_hooks(model, {layer: reader(layer) for layer in check_layers(model, layers)}):
        yield captured


@contextmanager
def residuals_for_grad(model: torch.nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Yield a dict each forward fills with layer -> block output, part of the autograd graph.

    With frozen parameters the first hooked output is a graph leaf: it is marked as requiring grad in
    place, so the forward pass builds the graph from there on. Outputs are never replaced.
    """
    captured: dict[int, torch.Tensor] = {}

    def reader(layer: int) -> BlockFn:
        def read(hidden: torch.Tensor) -> None:
            if not hidden.requires_grad:
                hidden.requires_grad_(True)
            captured[layer] = hidden

        return read

    with block_hooks(model, {layer: reader(layer) for layer in layers}):
        yield captured


class _StopForward(Exception):
    """Raised after the last block a caller reads, so the blocks above it are not run."""


def run_decoder(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                stop_after: int | None = None) -> None:
    """Forward through the decoder stack only, for its hooks: the LM head (262k wide on Gemma) is skipped,
    and with `stop_after` every block above that one too (nothing reads them; SAEs at layers 2..10 of 18
    cost 11 blocks, not 18). Hooks registered before this call see the blocks they read as usual."""
    device = next(model.parameters()).device
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "use_cache": False}
    if stop_after is None:
        model.model(**inputs)
        return

    def stop(module: torch.nn.Module, args: Any, output: Any) -> None:
        raise _StopForward

    handle = decoder_layers(model)[check_layers(model, [stop_after])[0]].register_forward_hook(stop)
    try:
        model.model(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
