"""Logit-based evaluation of a task split: one forward pass per prompt, no generation.

Every example is scored at its last prompt position. Two accuracies are kept because they answer
different questions: ``correct_full`` (argmax over the whole vocabulary is the correct letter, the
paper's metric) also fails when the model prefers some unrelated token, while ``correct_2way`` (the
correct letter beats the other one) isolates which of the two rules the model follows.

Accuracies are plain per-example means, not the paper code's mean of batch means (which over-weights a
partial last batch), so they do not depend on the batch size.

Hooks are not attached here: the caller wraps :func:`predict` in the ablation context manager for the
hooked and test-only modes, and calls it bare for the deployed mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from caft.config import SectionConfig
from caft.errors import ConfigError, DataError
from caft.model.prompts import LETTERS, encode_prompts, last_position_logits, letter_token_ids

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TIE = "tie"
"""``pred_2way`` when both letters get exactly the same logit: the model prefers neither, so it is wrong."""


@dataclass(frozen=True)
class EvaluationConfig(SectionConfig):
    """The `evaluation` section: batch size and the forward pass's precision."""

    SECTION: ClassVar[str] = "evaluation"

    batch_size: int
    precision: str = "auto"


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    table: pd.DataFrame,
    answer: str,
    batch_size: int = 32,
    progress: bool = False,
) -> pd.DataFrame:
    """Per-example logits and predictions for ``table`` (a task split), scored against column ``answer``.

    Returns one row per example in the split's order; ``row`` is the example's position in the split.
    The model runs in eval mode (no dropout) and is put back into its previous mode afterwards, so it is
    safe to call between training steps.
    """
    _check_split(table, answer)
    if batch_size < 1:
        raise ConfigError(f"evaluation batch_size must be ≥ 1; got {batch_size}")
    ids = letter_token_ids(tokenizer)
    prompts = table["prompt"].tolist()
    starts = range(0, len(prompts), batch_size)
    pair_logits, argmax = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress):
                logits = last_position_logits(model, encode_prompts(tokenizer, prompts[start : start + batch_size]))
                pair_logits.append(logits[:, [ids["A"], ids["B"]]].float().cpu())
                argmax.append(logits.argmax(dim=-1).cpu())
    finally:
        model.train(was_training)

    pair = torch.cat(pair_logits).numpy().astype(np.float64)
    logit_a, logit_b = pair[:, 0], pair[:, 1]
    answers = table[answer].astype(str).to_numpy()
    is_a = answers == "A"
    logit_diff = np.where(is_a, logit_a - logit_b, logit_b - logit_a)
    pred_token = torch.cat(argmax).numpy().astype(np.int64)
    return pd.DataFrame({
        "row": np.arange(len(table), dtype=np.int64),
        "answer": answers,
        "logit_a": logit_a,
        "logit_b": logit_b,
        "logit_diff": logit_diff,
        "pred_2way": np.where(logit_a > logit_b, "A", np.where(logit_b > logit_a, "B", TIE)),
        "pred_token": pred_token,
        "correct_2way": logit_diff > 0,
        "correct_full": pred_token == np.where(is_a, ids["A"], ids["B"]),
    })


def summarize(predictions: pd.DataFrame) -> dict[str, float]:
    """Accuracies (full vocabulary and A-vs-B), mean correct-minus-other logit, and example count."""
    if predictions.empty:
        raise DataError("cannot summarize an empty prediction table")
    return {
        "acc_2way": float(predictions["correct_2way"].mean()),
        "acc_full": float(predictions["correct_full"].mean()),
        "logit_diff": float(predictions["logit_diff"].mean()),
        "n": len(predictions),
    }


def _check_split(table: pd.DataFrame, answer: str) -> None:
    """Fail before any model work, naming the missing column or the bad rows."""
    if table.empty:
        raise DataError("split is empty: nothing to evaluate")
    missing = [column for column in ("prompt", answer) if column not in table.columns]
    if missing:
        raise DataError(f"split lacks column(s) {missing}; it has {list(table.columns)}")
    letters = table[answer].to_numpy()
    bad = np.flatnonzero(~table[answer].isin(LETTERS).to_numpy())
    if bad.size:
        shown = ", ".join(f"row {i} ({letters[i]!r})" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(f"column {answer!r} must hold 'A' or 'B'; bad value in {shown}{more}")
