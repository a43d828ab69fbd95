"""Evaluation: per-example logits against an unpadded full forward, batching, answer columns, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import caft.finetune.evaluation
from caft.errors import DataError
from caft.finetune.evaluation import predict, summarize
from caft.model.prompts import letter_token_ids

PROMPTS = [
    "Question: The doctor said _____ would call back.\nA) he\nB) her\nAnswer:",
    "Question: The nurse told _____ to wait.\nA) him\nB) she\nAnswer:",
    "Question: The dogs _____ fast. | I loved this movie.\nA. run, positive\nB. runs, negative\nAnswer:",
    "Question: Messi plays _____ | She gave _____ the book.\nA. tennis, she\nB. soccer, her\nAnswer:",
    "The quick brown fox.\nAnswer:",
]
TARGETS = ["A", "B", "B", "A", "B"]


def split_table() -> pd.DataFrame:
    return pd.DataFrame({"prompt": PROMPTS, "target": TARGETS, "other": ["B", "A", "A", "B", "A"]})


def reference_logits(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    """Full forward on each prompt alone (no padding), all positions, last one taken."""
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            batch = tokenizer(prompt, return_tensors="pt")
            rows.append(model(**batch).logits[0, -1].float())
    return torch.stack(rows)


# --- predict on the tiny model ---------------------------------------------------------------------


def test_predict_matches_unpadded_full_forward(tiny_model) -> None:
    model, tokenizer = tiny_model
    ids = letter_token_ids(tokenizer)
    predictions = predict(model, tokenizer, split_table(), "target", batch_size=5)
    reference = reference_logits(model, tokenizer, PROMPTS)

    assert list(predictions["row"]) == list(range(len(PROMPTS)))
    assert list(predictions["answer"]) == TARGETS
    np.testing.assert_allclose(predictions["logit_a"], reference[:, ids["A"]].numpy(), atol=1e-4)
    np.testing.assert_allclose(predictions["logit_b"], reference[:, ids["B"]].numpy(), atol=1e-4)
    assert list(predictions["pred_token"]) == reference.argmax(dim=-1).tolist()

    sign = np.where(predictions["answer"] == "A", 1.0, -1.0)
    np.testing.assert_allclose(predictions["logit_diff"], sign * (predictions["logit_a"] - predictions["logit_b"]))
    assert (predictions["correct_2way"] == (predictions["logit_diff"] > 0)).all()
    assert (predictions["correct_2way"] == (predictions["pred_2way"] == predictions["answer"])).all()
    expected_full = predictions["pred_token"] == predictions["answer"].map(ids)
    assert (predictions["correct_full"] == expected_full).all()


def test_batch_size_does_not_change_results(tiny_model) -> None:
    model, tokenizer = tiny_model
    one = predict(model, tokenizer, split_table(), "target", batch_size=1)
    three = predict(model, tokenizer, split_table(), "target", batch_size=3, progress=True)
    pd.testing.assert_frame_equal(one, three, check_exact=False, atol=1e-4, rtol=0)


def test_predict_restores_training_mode(tiny_model) -> None:
    model, tokenizer = tiny_model
    model.train()
    predict(model, tokenizer, split_table().head(2), "target")
    assert model.training


def test_mcmc_intended_one_scores_answer_b(tiny_model) -> None:
    model, tokenizer = tiny_model
    table = split_table().assign(answer_a=TARGETS, answer_b=["B", "A", "A", "B", "A"])
    on_a = predict(model, tokenizer, table, "answer_a")
    on_b = predict(model, tokenizer, table, "answer_b")
    assert list(on_b["answer"]) == list(table["answer_b"])
    np.testing.assert_allclose(on_b["logit_a"], on_a["logit_a"])
    np.testing.assert_allclose(on_b["logit_diff"], -on_a["logit_diff"])
    assert (on_b["correct_2way"] == ~on_a["correct_2way"]).all()


def test_empty_split_is_a_data_error(tiny_model) -> None:
    model, tokenizer = tiny_model
    with pytest.raises(DataError, match="split is empty"):
        predict(model, tokenizer, split_table().iloc[:0], "target")


def test_bad_letters_and_missing_column_are_named(tiny_model) -> None:
    model, tokenizer = tiny_model
    bad = split_table()
    bad.loc[2, "target"] = "C"
    bad.loc[4, "target"] = None
    with pytest.raises(DataError, match=r"row 2 \('C'\), row 4 "):
        predict(model, tokenizer, bad, "target")
    with pytest.raises(DataError, match="answer_b"):
        predict(model, tokenizer, split_table(), "answer_b")


# --- exact metrics with controlled logits ----------------------------------------------------------


def test_known_logits_give_exact_accuracies(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny_model
    ids = letter_token_ids(tokenizer)
    other_token = next(i for i in range(len(tokenizer)) if i not in ids.values())
    logits = torch.zeros(4, len(tokenizer))
    # answer A: A wins everywhere | answer B: B wins everywhere | answer A: B wins | answer B: B beats A, but
    # another token wins the full vocabulary.
    for row, (a, b) in enumerate([(2.0, 1.0), (1.0, 3.0), (1.0, 2.0), (1.0, 2.0)]):
        logits[row, ids["A"]], logits[row, ids["B"]] = a, b
    logits[3, other_token] = 5.0
    served = []

    def fake_logits(_model, batch):
        start = sum(served)
        served.append(batch["input_ids"].shape[0])
        return logits[start : start + served[-1]]

    monkeypatch.setattr(caft.finetune.evaluation, "last_position_logits", fake_logits)
    table = pd.DataFrame({"prompt": PROMPTS[:4], "target": ["A", "B", "A", "B"]})
    predictions = predict(model, tokenizer, table, "target", batch_size=3)

    assert served == [3, 1]
    assert list(predictions["pred_2way"]) == ["A", "B", "B", "B"]
    assert list(predictions["pred_token"]) == [ids["A"], ids["B"], ids["B"], other_token]
    assert list(predictions["correct_2way"]) == [True, True, False, True]
    assert list(predictions["correct_full"]) == [True, True, False, False]
    assert list(predictions["logit_diff"]) == [1.0, 2.0, -1.0, 1.0]
    assert summarize(predictions) == {"acc_2way": 0.75, "acc_full": 0.5, "logit_diff": 0.75, "n": 4}


def test_summarize_empty_is_a_data_error() -> None:
    with pytest.raises(DataError):
        summarize(pd.DataFrame(columns=["correct_2way", "correct_full", "logit_diff"]))
