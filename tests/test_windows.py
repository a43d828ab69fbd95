"""Top-activating windows: the streaming top-k logic on planted activations, and PC projections on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from caft.directions.windows import (
    ActivationBatch,
    component_activations,
    projection_scores,
    sae_scores,
    top_windows,
)
from caft.errors import ConfigError
from caft.model.loading import decoder_layers
from tests.fixtures_models import TINY_CORPUS, build_tiny_tokenizer

NAN = float("nan")


def batch(docs: list[int], rows: list[list[float]], m: int = 1) -> ActivationBatch:
    """Right-padded batch of one layer (0) whose latent c has activation ``(c + 1) * value``."""
    width = max(len(row) for row in rows)
    values = np.full((len(rows), width, m), np.nan, dtype=np.float32)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        values[index, : len(row)] = np.outer(row, np.arange(1, m + 1))
        ids[index, : len(row)] = np.arange(4, 4 + len(row))
    return ActivationBatch(
        docs=np.array(docs), lengths=np.array([len(row) for row in rows]), input_ids=ids, values={0: values}
    )


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_running_top_k_is_exact_and_independent_of_batching(tokenizer) -> None:
    rows = [
        [NAN, 1, 5, 0, -2, 3],  # doc 0: windows [0,4) peak 5/min 0, [4,6) peak 3/min -2
        [NAN, 5, -7, 2],  # doc 1: one window, ties doc 0's max 5
        [NAN],  # doc 2: only a masked token, never a window
        [2, 2, 2, 2, -1, 4, 4, 4],  # doc 3
    ]
    one = top_windows([batch([0, 1, 2, 3], rows, m=2)], tokenizer, window=4, per_component=3)
    streamed = top_windows(
        [batch([0], rows[:1], m=2), batch([1, 2], rows[1:3], m=2), batch([3], rows[3:], m=2)],
        tokenizer, window=4, per_component=3,
    )
    pd.testing.assert_frame_equal(one, streamed)
    positive = one[(one["component"] == 0) & (one["sign"] == "positive")]
    assert positive[["doc", "start", "peak"]].values.tolist() == [[0, 0, 5], [1, 0, 5], [3, 4, 4]]
    negative = one[(one["component"] == 1) & (one["sign"] == "negative")]
    assert negative[["doc", "start", "peak"]].values.tolist() == [[1, 0, -14], [0, 4, -4], [3, 4, -2]]
    assert negative["rank"].tolist() == [0, 1, 2]
    first = positive.iloc[0]
    assert first["token_ids"] == [4, 5, 6, 7] and first["tokens"] == tokenizer.batch_decode([[i] for i in range(4, 8)])
    assert math.isnan(first["values"][0]) and first["values"][1:] == [1.0, 5.0, 0.0]
    assert one.loc[(one["doc"] == 0) & (one["start"] == 4), "token_ids"].iloc[0] == [8, 9]  # short at the end
    assert 2 not in set(one["doc"])
    only_positive = top_windows([batch([0], rows[:1])], tokenizer, window=4, per_component=5, signs=("positive",))
    assert set(only_positive["sign"]) == {"positive"} and len(only_positive) == 2



def test_top_windows_hold_only_windows_of_their_sign(tokenizer) -> None:
    """A latent that never fires (zero everywhere) has no top windows; one firing on one window has one."""
    rows = [[NAN, 0, 0, 0, 0, 0], [0, 0, 0, 0], [NAN, 0, 2, 0]]
    frame = top_windows([batch([0, 1, 2], rows)], tokenizer, window=4, per_component=3)
    assert frame[["sign", "doc", "start", "peak"]].values.tolist() == [["positive", 2, 0, 2.0]]
    never = top_windows([batch([0, 1], rows[:2])], tokenizer, window=4, per_component=3, random_per_component=1)
    assert set(never["sign"]) == {"random"}  # random windows are drawn whatever the activation

RANDOM_ROWS = [
    [NAN, 1, 5, 0, -2, 3],  # doc 0: windows (0, 0) max 5, (0, 4) max 3
    [NAN, 5, -7, 2],  # doc 1: (1, 0) max 5
    [NAN],  # doc 2: masked only, never sampled
    [2, 2, 2, 2, -1, 4, 4, 4],  # doc 3: (3, 0) max 2, (3, 4) max 4
    [NAN, -1, -1, -3, -3],  # doc 4: (4, 0) max -1, (4, 4) max -3: low windows are sampled too
]
RANDOM_PEAKS = {(0, 0): 5.0, (0, 4): 3.0, (1, 0): 5.0, (3, 0): 2.0, (3, 4): 4.0, (4, 0): -1.0, (4, 4): -3.0}


def random_rows(frame: pd.DataFrame, component: int) -> pd.DataFrame:
    return frame[(frame["sign"] == "random") & (frame["component"] == component)]


def test_random_windows_cover_every_unmasked_window_with_its_max(tokenizer) -> None:
    plain = top_windows([batch([0, 1, 2, 3, 4], RANDOM_ROWS, m=2)], tokenizer, window=4, per_component=3)
    frame = top_windows([batch([0, 1, 2, 3, 4], RANDOM_ROWS, m=2)], tokenizer, window=4, per_component=3,
                        random_per_component=10)
    assert "random" not in set(plain["sign"])
    pd.testing.assert_frame_equal(frame[frame["sign"] != "random"].reset_index(drop=True), plain)
    for component in (0, 1):
        rows = random_rows(frame, component)
        peaks = {(row.doc, row.start): row.peak for row in rows.itertuples()}
        assert peaks == {key: (component + 1) * peak for key, peak in RANDOM_PEAKS.items()}
        assert rows["rank"].tolist() == list(range(7))
    sampled = random_rows(frame, 0).set_index(["doc", "start"])
    assert sampled.loc[(4, 4), "token_ids"] == [8] and sampled.loc[(4, 4), "values"] == [-3.0]
    assert frame["sign"].tolist() == (["positive"] * 3 + ["negative"] * 3 + ["random"] * 7) * 2


def test_random_windows_are_the_smallest_seeded_keys_whatever_the_batching(tokenizer) -> None:
    docs = [0, 1, 2, 3, 4]
    one = top_windows([batch(docs, RANDOM_ROWS, m=2)], tokenizer, window=4, random_per_component=3, seed=5)
    streamed = top_windows(
        [batch(docs[:1], RANDOM_ROWS[:1], m=2), batch(docs[1:4], RANDOM_ROWS[1:4], m=2),
         batch(docs[4:], RANDOM_ROWS[4:], m=2)],
        tokenizer, window=4, random_per_component=3, seed=5,
    )
    pd.testing.assert_frame_equal(one, streamed)
    for component in (0, 1):
        keys = {
            (doc, start): np.random.default_rng([5, 0, doc]).random((starts[-1] // 4 + 1, 2))[start // 4, component]
            for doc, starts in [(0, [0, 4]), (1, [0]), (3, [0, 4]), (4, [0, 4])]
            for start in starts
        }
        expected = sorted(keys, key=keys.get)[:3]
        assert [(row.doc, row.start) for row in random_rows(one, component).itertuples()] == expected
    other_seed = top_windows([batch(docs, RANDOM_ROWS, m=2)], tokenizer, window=4, random_per_component=3, seed=6)
    assert not random_rows(other_seed, 0)[["doc", "start"]].equals(random_rows(one, 0)[["doc", "start"]])


def test_random_windows_are_uniform_over_seeds(tokenizer) -> None:
    counts = dict.fromkeys(RANDOM_PEAKS, 0)
    for seed in range(210):
        frame = top_windows([batch([0, 1, 2, 3, 4], RANDOM_ROWS)], tokenizer, window=4, random_per_component=2,
                            seed=seed, signs=("positive",))
        for row in random_rows(frame, 0).itertuples():
            counts[row.doc, row.start] += 1
    assert sum(counts.values()) == 420
    # 60 expected per window (420 / 7), binomial sd ≈ 7
    assert all(35 <= count <= 85 for count in counts.values()), counts


def test_quantile_windows_span_the_activating_windows_weakest_first(tokenizer) -> None:
    rng = np.random.default_rng(0)
    rows = [[NAN, *rng.normal(size=39).tolist()] for _ in range(30)]  # 30 docs x 10 windows of 4 tokens
    docs = list(range(30))
    frame = top_windows([batch(docs, rows)], tokenizer, window=4, signs=("positive",), quantile_per_component=4,
                        seed=2)
    bands = frame[frame["sign"] == "quantile"]
    assert bands["rank"].tolist() == [0, 1, 2, 3]
    peaks = bands["peak"].tolist()
    assert peaks == sorted(peaks) and min(peaks) > 0  # activating windows only, weakest first
    top_peak = frame[frame["sign"] == "positive"]["peak"].max()
    assert max(peaks) <= top_peak
    # they are bands of a 40-window pool: from low to high, not all near the top
    every = [max(v for v in row[start:start + 4] if not math.isnan(v)) for row in rows for start in range(0, 40, 4)]
    positive = np.array([p for p in every if p > 0])
    assert (positive < peaks[0]).mean() < 0.3 and (positive < peaks[-1]).mean() > 0.7
    streamed = top_windows([batch(docs[:7], rows[:7]), batch(docs[7:], rows[7:])], tokenizer, window=4,
                           signs=("positive",), quantile_per_component=4, seed=2)
    pd.testing.assert_frame_equal(frame, streamed)
    # no activating window: no quantile windows; the random sample is unchanged by the option
    negative = top_windows([batch([0], [[NAN, -1, -2, -3]])], tokenizer, window=4, quantile_per_component=4)
    assert "quantile" not in set(negative["sign"])
    without = top_windows([batch(docs, rows)], tokenizer, window=4, random_per_component=3, seed=2)
    with_bands = top_windows([batch(docs, rows)], tokenizer, window=4, random_per_component=3, seed=2,
                             quantile_per_component=4)
    pd.testing.assert_frame_equal(without, with_bands[with_bands["sign"] != "quantile"].reset_index(drop=True))


def test_top_windows_rejects_bad_settings(tokenizer) -> None:
    with pytest.raises(ConfigError, match="signs"):
        top_windows([], tokenizer, signs=("up",))
    with pytest.raises(ConfigError, match="positive"):
        top_windows([], tokenizer, window=0)
    for bad in ({"random_per_component": -1}, {"seed": -2}, {"seed": True}, {"random_per_component": 1.5}):
        with pytest.raises(ConfigError, match="random_per_component, quantile_per_component and seed must be non-negative integers"):
            top_windows([], tokenizer, **bad)
    assert top_windows([], tokenizer).empty


def test_projection_scores_use_unit_directions() -> None:
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(8, 3, generator=gen)
    residual = torch.randn(2, 5, 8, generator=gen)
    unit = directions / directions.norm(dim=0)
    torch.testing.assert_close(projection_scores({4: 3.0 * directions})(4, residual), residual @ unit)
    with pytest.raises(ConfigError, match="zero vector"):
        projection_scores({0: torch.zeros(8, 1)})


def independent_residuals(model, docs) -> dict[int, list[torch.Tensor]]:
    """Each document run alone through the model, with hooks of the test's own: layer -> [T, d] per doc."""
    out: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    handles = [
        decoder_layers(model)[layer].register_forward_hook(
            # transformers 5 blocks return the tensor [1, T, d]: [0] is the single document
            lambda mod, args, output, layer=layer: out[layer].append(output[0])
        )
        for layer in out
    ]
    try:
        with torch.inference_mode():
            for ids in docs:
                model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return out


def test_pc_windows_on_tiny_model(tiny_model) -> None:
    model, tokenizer = tiny_model
    texts = [*TINY_CORPUS, "Then: " + " ".join(TINY_CORPUS[2:5]), "Answer: A"]
    docs = [tokenizer(text).input_ids for text in texts]
    assert all(ids[0] == tokenizer.bos_token_id for ids in docs)
    gen = torch.Generator().manual_seed(3)
    directions = {layer: torch.randn(32, 2, generator=gen) for layer in (0, 1)}
    frame = top_windows(
        component_activations(model, tokenizer, docs, [0, 1], directions, batch_size=3), tokenizer, per_component=4,
        random_per_component=3,
    )
    rebatched = top_windows(
        component_activations(model, tokenizer, docs, [0, 1], directions, batch_size=8), tokenizer, per_component=4,
        random_per_component=3,
    )
    assert frame[["layer", "component", "sign", "rank", "doc", "start"]].equals(
        rebatched[["layer", "component", "sign", "rank", "doc", "start"]]
    )
    residuals = independent_residuals(model, docs)
    for (layer, component), group in frame.groupby(["layer", "component"]):
        assert set(group["sign"]) == {"positive", "negative", "random"}
        assert (group["sign"] == "random").sum() == 3
        unit = directions[layer][:, component] / directions[layer][:, component].norm()
        truth = [(h @ unit).double().numpy() for h in residuals[layer]]
        for values in truth:
            values[0] = np.nan  # BOS
        positive, negative = group[group["sign"] == "positive"], group[group["sign"] == "negative"]
        assert positive["peak"].min() >= negative["peak"].max()
        assert positive["peak"].is_monotonic_decreasing and negative["peak"].is_monotonic_increasing
        assert positive["peak"].iloc[0] == pytest.approx(max(np.nanmax(v) for v in truth), abs=1e-4)
        assert negative["peak"].iloc[0] == pytest.approx(min(np.nanmin(v) for v in truth), abs=1e-4)
        for row in group.itertuples():
            length = len(row.token_ids)
            assert row.start % 16 == 0 and 1 <= length <= 16
            assert length == 16 or row.start + length == len(docs[row.doc])
            assert row.token_ids == docs[row.doc][row.start : row.start + length]
            assert "".join(row.tokens) == tokenizer.decode(row.token_ids)
            expected = truth[row.doc][row.start : row.start + length]
            np.testing.assert_allclose(row.values, expected, atol=1e-4)
            assert [i for i, v in enumerate(row.values) if math.isnan(v)] == ([0] if row.start == 0 else [])
            peak = np.nanmin(row.values) if row.sign == "negative" else np.nanmax(row.values)
            assert row.peak == pytest.approx(peak, abs=1e-6)
    with pytest.raises(ConfigError, match="no directions"):
        list(component_activations(model, tokenizer, docs, [0, 1], {0: directions[0]}, batch_size=2))


def test_sae_scores_are_the_selected_latents_in_order(sae_factory) -> None:
    from sae_lens import SAE

    sae = SAE.load_from_disk(sae_factory("topk", d_in=32))
    residual = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    scores = sae_scores({3: sae}, {3: [7, 2, 40]})(3, residual)
    torch.testing.assert_close(scores, sae.encode(residual)[..., [7, 2, 40]])
    with pytest.raises(ConfigError, match=r"no SAE for layer\(s\) \[5\]"):
        sae_scores({3: sae}, {5: [1]})
