"""Prompt encoding and last-position logits, shared by training and evaluation.

Only the last prompt position is scored, so the head runs there alone (``logits_to_keep=1``): with
Gemma's 262k vocabulary, full logits at every position cost several times the whole forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from caft.errors import DataError, ModelLoadError

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

LETTERS = ("A", "B")


def letter_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Token ids of the answers " A" and " B", which must each be a single token."""
    ids = {}
    for letter in LETTERS:
        encoded = tokenizer.encode(f" {letter}", add_special_tokens=False)
        if len(encoded) != 1:
            raise ModelLoadError(f"the tokenizer splits the answer ' {letter}' into {len(encoded)} tokens; need 1")
        ids[letter] = encoded[0]
    return ids


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> BatchEncoding:
    """Left-padded batch, so the last position of every row is its prompt's last token."""
    if tokenizer.padding_side != "left":
        raise ModelLoadError("prompts must be left-padded (the loader sets padding_side='left')")
    return tokenizer(list(prompts), return_tensors="pt", padding=True)


def last_position_logits(model: PreTrainedModel, batch: BatchEncoding) -> torch.Tensor:
    """Full-vocabulary logits at the last position, ``[batch, vocab]`` (with the model's softcap)."""
    out = model(
        input_ids=batch["input_ids"].to(model.device),
        attention_mask=batch["attention_mask"].to(model.device),
        logits_to_keep=1,
        use_cache=False,
    )
    return out.logits[:, -1, :]


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


def task_answers(table: Any, tokenizer: PreTrainedTokenizerBase, where: str) -> tuple[list[int], list[int]]:
    """Token ids of each task row's correct and other letter (" A" / " B")."""
    missing = {"target", "other"} - set(table.columns)
    if missing:
        raise DataError(f"{where}: the task table lacks column(s) {sorted(missing)}")
    letters = letter_token_ids(tokenizer)
    unknown = sorted((set(table["target"]) | set(table["other"])) - set(letters))
    if unknown:
        raise DataError(f"{where}: answers must be one of {sorted(letters)}, got {unknown}")
    return [letters[t] for t in table["target"]], [letters[o] for o in table["other"]]
