"""The engine's two objectives: what one optimizer step computes the loss of.

- `LastPositionAnswer` — the spurious-correlation tasks: cross-entropy of the answer letter at the last
  prompt position, a mean over the step's examples.
- `AssistantTokens` — emergent misalignment: cross-entropy of every assistant token of a chat, a mean over
  all assistant tokens of the step, token-weighted across micro-batches, so gradient accumulation changes
  memory use and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json

import numpy as np
import pandas as pd
import torch

from caft.em.chat_data import IGNORE, check_messages, encode_chat
from caft.errors import DataError
from caft.finetune.engine import StepResult
from caft.model.prompts import encode_prompts, last_position_logits, letter_token_ids

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import PreTrainedTokenizerBase

Encoded = list[tuple[list[int], list[int]]]
"""(input ids, labels) per example; labels are `IGNORE` except on assistant tokens."""


def _autocast(model: torch.nn.Module, precision: str) -> torch.autocast:
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-autocast")


class LastPositionAnswer:
    """The answer letter (column ``answer``: A or B) at the last position of each prompt."""

    unit = "examples"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, examples: pd.DataFrame, answer: str, precision: str):
        bad = ~examples[answer].isin(["A", "B"])
        if bad.any():
            raise DataError(f"training row {int(bad.idxmax())} has answer {examples[answer][bad].iloc[0]!r}; "
                            "need A or B")
        letter_ids = letter_token_ids(tokenizer)
        self.tokenizer = tokenizer
        self.prompts = examples["prompt"]
        self.targets = torch.tensor([letter_ids[a] for a in examples[answer]])
        self.precision = precision
        self.size = len(examples)

    def step(self, model: torch.nn.Module, rows: np.ndarray, micro: int) -> StepResult:
        loss_sum, correct = 0.0, 0
        for part in range(0, len(rows), micro):
            part_rows = rows[part:part + micro]
            loss, hits = self.loss(model, part_rows)
            (loss * len(part_rows) / len(rows)).backward()
            loss_sum += loss.item() * len(part_rows)
            correct += hits
        return StepResult(loss_sum / len(rows), len(rows), {"accuracy": correct / len(rows)}, correct)

    def loss(self, model: torch.nn.Module, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy of the rows' answer letters, and how many the model gets right."""
        batch = encode_prompts(self.tokenizer, self.prompts.iloc[rows].tolist())
        with _autocast(model, self.precision):
            logits = last_position_logits(model, batch)
        targets = self.targets[rows].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        return loss, int((logits.argmax(-1) == targets).sum())


class AssistantTokens:
    """Every assistant token of each chat (the labels of `encode_table`)."""

    unit = "assistant tokens"

    def __init__(self, encoded: Encoded, pad_id: int, precision: str):
        self.encoded = encoded
        self.pad_id = pad_id
        self.precision = precision
        self.size = len(encoded)

    def step(self, model: torch.nn.Module, rows: np.ndarray, micro: int) -> StepResult:
        batch = [self.encoded[i] for i in rows]
        tokens = sum(sum(label != IGNORE for label in labels[1:]) for _, labels in batch)
        device = next(model.parameters()).device
        loss_sum = 0.0
        for part in range(0, len(batch), micro):
            input_ids, attention_mask, labels = (t.to(device) for t in right_padded(batch[part:part + micro],
                                                                                      self.pad_id))
            with _autocast(model, self.precision):
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            summed = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                       ignore_index=IGNORE, reduction="sum")
            (summed / tokens).backward()
            loss_sum += summed.item()
        return StepResult(loss_sum / tokens, tokens, {"tokens": tokens})


def encode_table(tokenizer: PreTrainedTokenizerBase, table: pd.DataFrame, max_tokens: int) -> Encoded:
    """The encoded examples of a chat table (columns id, messages), in its order."""
    missing = {"id", "messages"} - set(table.columns)
    if missing:
        raise DataError(f"the chat table lacks column(s) {sorted(missing)}")
    encoded = []
    for row in table.itertuples(index=False):
        where = f"chat row {row.id!r}"
        try:
            messages = check_messages(json.loads(row.messages), where)
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}: messages is not valid JSON: {err}") from err
        encoded.append(encode_chat(tokenizer, messages, max_tokens, where))
    return encoded


def right_padded(batch: Encoded, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, attention mask and labels [batch, longest], padded on the right (labels ignored there)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in batch])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
    labels = torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in batch])
    return input_ids, mask, labels
