"""Card profiles: streaming activation statistics, logit effects, D_amb examples, byte-fallback decoding."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from caft.directions.profiles import (
    QUANTILES,
    ActivationProfiles,
    card_profiles,
    example_rows,
    final_norm_gain,
    logit_effects,
    task_examples,
)
from caft.directions.windows import ActivationBatch, decode_tokens, projection_scores
from caft.errors import ConfigError
from caft.model.prompts import letter_token_ids
from tests.fixtures_models import build_tiny_tokenizer

NAN = math.nan


def batch(docs: list[int], rows: list[list[float]]) -> ActivationBatch:
    """One layer (0), two candidates: candidate c has activation ``(c + 1) * value``; NaN = masked."""
    width = max(len(row) for row in rows)
    values = np.full((len(rows), width, 2), np.nan, dtype=np.float32)
    for index, row in enumerate(rows):
        values[index, : len(row)] = np.outer(row, [1, 2])
    return ActivationBatch(docs=np.array(docs), lengths=np.array([len(r) for r in rows]),
                           input_ids=np.zeros((len(rows), width), dtype=np.int64), values={0: values})


ROWS = [[NAN, 1.0, 0.0, 2.0], [NAN, -1.0], [NAN, 3.0, 0.5, -0.5, 4.0]]


def test_profiles_are_exact_and_pass_batches_through() -> None:
    profiles = ActivationProfiles(sample_size=100)
    batches = [batch([0, 1], ROWS[:2]), batch([2], ROWS[2:])]
    assert list(profiles.observe(batches)) == batches
    frame = profiles.frame()
    real = np.array([v for row in ROWS for v in row if not math.isnan(v)])
    assert list(frame["component"]) == [0, 1] and list(frame["tokens"]) == [len(real)] * 2
    for component, scale in ((0, 1.0), (1, 2.0)):
        row = frame.iloc[component]
        values = real * scale
        assert row["density"] == pytest.approx((values > 0).mean())
        assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std())
        assert (row["min"], row["max"]) == (values.min(), values.max())
        # the whole corpus fits in the sample: quantiles and histogram are exact
        np.testing.assert_allclose(row["quantiles"], np.quantile(values, QUANTILES))
        assert sum(row["hist_counts"]) == len(values)
        assert row["hist_edges"][0] == values.min() and row["hist_edges"][-1] == values.max()


def test_profile_sample_is_uniform_seeded_and_independent_of_batching() -> None:
    rng = np.random.default_rng(0)
    rows = [[NAN, *rng.normal(size=30).tolist()] for _ in range(20)]

    def profile(chunks: list[list[int]], seed: int = 3) -> pd.DataFrame:
        profiles = ActivationProfiles(sample_size=50, seed=seed)
        list(profiles.observe(batch(docs, [rows[d] for d in docs]) for docs in chunks))
        return profiles.frame()

    one = profile([list(range(20))])
    split = profile([[0, 1, 2], list(range(3, 11)), list(range(11, 20))])
    pd.testing.assert_frame_equal(one, split)
    assert sum(one["hist_counts"].iloc[0]) == 50  # 600 tokens, 50 kept
    assert one["tokens"].iloc[0] == 600  # counts stay exact
    assert profile([list(range(20))], seed=4)["quantiles"].iloc[0] != one["quantiles"].iloc[0]


def test_active_only_histograms_count_active_tokens() -> None:
    profiles = ActivationProfiles(active_only=True)
    list(profiles.observe([batch([0, 1, 2], ROWS)]))
    row = profiles.frame().iloc[0]
    assert sum(row["hist_counts"]) == 5  # 1, 2, 3, 0.5, 4
    assert row["density"] == pytest.approx(5 / 8)
    with pytest.raises(ConfigError, match="sample_size"):
        ActivationProfiles(sample_size=0)


def test_logit_effects_are_the_direct_path_through_the_final_norm(tiny_model) -> None:
    model, tokenizer = tiny_model
    gain = final_norm_gain(model)
    torch.testing.assert_close(gain, model.model.norm.weight.float())  # Llama's RMSNorm: gain = weight
    directions = {1: torch.randn(32, 3, generator=torch.Generator().manual_seed(0)) * 5}
    frame = logit_effects(model, tokenizer, directions, k=4)
    unembed = model.get_output_embeddings().weight.detach().float()
    ids = letter_token_ids(tokenizer)
    for column in range(3):
        unit = directions[1][:, column] / directions[1][:, column].norm()
        logits = unembed @ (gain * unit)
        row = frame.iloc[column]
        assert row["promoted"] == [tokenizer.decode([i]) for i in logits.topk(4).indices.tolist()]
        assert row["suppressed"] == [tokenizer.decode([i]) for i in (-logits).topk(4).indices.tolist()]
        np.testing.assert_allclose(row["promoted_logits"], logits.topk(4).values.numpy(), rtol=1e-5)
        assert row["ab_logit_diff"] == pytest.approx(float(logits[ids["A"]] - logits[ids["B"]]), rel=1e-5)
    # a small step along the direction at the last block's output moves the logits by ~ W_U g d / rms
    batch_ids = tokenizer(["The quick brown fox"], return_tensors="pt")
    unit = directions[1][:, 0] / directions[1][:, 0].norm()
    with torch.no_grad():
        hidden = model.model(**batch_ids).last_hidden_state[:, -1]  # after the final norm
        pre = model.model(**batch_ids, output_hidden_states=True).hidden_states[-1][:, -1]  # before it
        rms = pre.pow(2).mean().add(model.config.rms_norm_eps).sqrt()
        stepped = model.model.norm(pre + 1e-3 * unit) @ unembed.T
        base = hidden @ unembed.T
    slope = ((stepped - base) / 1e-3 * rms)[0]
    corr = torch.corrcoef(torch.stack([slope, unembed @ (gain * unit)]))[0, 1]
    assert corr > 0.9  # the direct path, up to the norm's rescaling


def test_task_examples_are_per_token_activations_of_training_prompts(tiny_model) -> None:
    model, tokenizer = tiny_model
    directions = {0: torch.randn(32, 2, generator=torch.Generator().manual_seed(1))}
    prompts = ["Question: The dogs _____ fast.", "The quick brown fox"]
    frame = task_examples(model, tokenizer, prompts, [5, 9], projection_scores(directions), [0], batch_size=1)
    assert list(frame["component"]) == [0, 0, 1, 1] and list(frame["row"]) == [5, 9, 5, 9]
    for row in frame.itertuples():
        ids = tokenizer(prompts[row.example])["input_ids"]
        assert "".join(row.tokens) == tokenizer.decode(ids) and len(row.values) == len(ids)
        assert math.isnan(row.values[0]) and not any(math.isnan(v) for v in row.values[1:])  # BOS masked
    assert example_rows(100, 3, seed=0) == example_rows(100, 3, seed=0) != example_rows(100, 3, seed=1)
    assert example_rows(2, 5, seed=0) == [0, 1]


def test_card_profiles_join_one_row_per_card() -> None:
    profiles = pd.DataFrame({"layer": [0, 0], "component": [0, 1], "tokens": [5, 5]})
    effects = pd.DataFrame({"layer": [0, 0], "component": [1, 0], "ab_logit_diff": [2.0, -1.0]})
    examples = pd.DataFrame({"layer": [0, 0, 0], "component": [0, 0, 1], "example": [0, 1, 0], "row": [3, 7, 3],
                             "tokens": [["a"], ["b"], ["a"]], "values": [[1.0], [2.0], [3.0]]})
    cards = card_profiles(profiles, effects, examples)
    assert list(cards["ab_logit_diff"]) == [-1.0, 2.0]
    assert cards["example_rows"].tolist() == [[3, 7], [3]]
    assert cards["example_values"].tolist() == [[[1.0], [2.0]], [[3.0]]]


def test_decode_tokens_joins_byte_fallback_characters() -> None:
    tokenizer = build_tiny_tokenizer()
    text = "a ü 漢 b"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    alone = [tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in t for t in alone)  # the tiny byte-level BPE splits these characters
    decoded = decode_tokens(tokenizer, ids)
    assert len(decoded) == len(ids) and "".join(decoded) == text
    assert not any("\ufffd" in t for t in decoded)
    assert decode_tokens(tokenizer, ids[:1] + ids[-1:]) == [alone[0], alone[-1]]
