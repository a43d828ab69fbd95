"""Selections: the manual YAML format and its errors, the top/random baselines, JSON, projection specs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from caft.ablation.selection import (
    RANDOM_POOL_TAG,
    Selection,
    SelectorConfig,
    auto_selection,
    load_manual_selection,
    projection_spec,
    random_pool_selection,
    random_selection,
    top_selection,
)
from caft.directions.attribution import rank_scores
from caft.errors import ConfigError, DataError
from caft.stages.pca import select_pca
from caft.stages.sae import select_sae
from tests.config_helpers import check_section

N_LAYERS = 8
N_IDS = 20

VALID = """\
# a person's choice
pca:
  layers:
    3: [2, 0]
    7: [1]
  notes: "pronoun-ish directions"
sae:
  layers: {5: [1234, 77]}
"""


def write(tmp_path: Path, text: str, name: str = "gender.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_manual_selection(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    pca = load_manual_selection(path, "pca", N_LAYERS, N_IDS)
    assert (pca.method, pca.selector, pca.task, pca.seed) == ("pca", "manual", "gender", None)
    assert pca.layers == {3: [0, 2], 7: [1]}
    assert pca.count() == 3 and pca.layer_counts() == {3: 2, 7: 1}
    assert pca.provenance["notes"] == "pronoun-ish directions"
    assert pca.provenance["file"] == str(path) and len(pca.provenance["section_sha256"]) == 64
    sae = load_manual_selection(path, "sae", N_LAYERS, {5: 16384})
    assert sae.layers == {5: [77, 1234]} and sae.provenance["notes"] is None


def test_quoted_layer_keys_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, 'pca:\n  layers: {"3": [0]}\n')
    assert load_manual_selection(path, "pca", N_LAYERS, N_IDS).layers == {3: [0]}


def test_missing_file_says_what_to_create(tmp_path: Path) -> None:
    path = tmp_path / "config" / "selections" / "sports.yaml"
    with pytest.raises(ConfigError, match=r"no manual selection for task sports: create .*sports\.yaml"):
        load_manual_selection(path, "pca", N_LAYERS, N_IDS)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("pca:\n  layers: {3: [0, 1]\n", r"invalid YAML"),
        ("pca:\n  layers:\n    3: [0]\n    3: [1]\n", r"(?s)invalid YAML.*duplicate key 3.*line 4"),
        ("sae:\n  layers: {3: [0]}\n", r"no 'pca:' section"),
        ("pca:\n  layers: {3: [0]}\nsea:\n  layers: {}\n", r"unknown top-level key\(s\) \['sea'\]"),
        ("pca:\n  layer: {3: [0]}\n", r"pca: unknown key\(s\) \['layer'\]"),
        ("pca:\n  notes: hi\n", r"pca: give either 'layers' .* or 'rule'"),
        ("pca:\n  layers: {8: [0]}\n", r"pca: layer 8 out of range: the model has 8 layers"),
        ("pca:\n  layers: {-1: [0]}\n", r"pca: layer -1 out of range"),
        ("pca:\n  layers: {x: [0]}\n", r"pca: layer key 'x' is not an integer"),
        ("pca:\n  layers: {3: [0, 20]}\n", r"pca: layer 3: id 20 out of range \(valid ids 0\.\.19\)"),
        ("pca:\n  layers: {3: [0, 1.5]}\n", r"pca: layer 3: id 1\.5 is not an integer"),
        ("pca:\n  layers: {3: [0, '2']}\n", r"pca: layer 3: id '2' is not an integer"),
        ("pca:\n  layers: {3: [true]}\n", r"pca: layer 3: id True is not an integer"),
        ("pca:\n  layers: {3: [1, 0, 1]}\n", r"pca: layer 3: duplicate id\(s\) \[1\]"),
        ("pca:\n  layers: {3: 1}\n", r"pca: layer 3: ids must be a list"),
        ("pca:\n  layers: {3: []}\n", r"pca: layer 3: empty id list"),
        ("pca:\n  layers: {3: [0], '3': [1]}\n", r"pca: layer 3 is listed twice"),
        ("pca:\n  layers: {}\n", r"pca: empty selection"),
        ("pca:\n  layers:\n", r"pca: empty selection"),
        ("pca:\n", r"pca: expected a mapping"),
        ("- pca\n", r"expected a mapping of method"),
        ("pca:\n  layers: {3: [0]}\n  notes: [1]\n", r"pca: 'notes' must be text"),
    ],
)
def test_invalid_manual_selection_names_file_and_place(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_manual_selection(path, "pca", N_LAYERS, N_IDS)
    assert str(path) in str(info.value)


def test_per_layer_id_ranges(tmp_path: Path) -> None:
    path = write(tmp_path, "sae:\n  layers: {5: [100], 6: [0]}\n")
    with pytest.raises(ConfigError, match=r"sae: layer 5: id 100 out of range \(valid ids 0\.\.99\)"):
        load_manual_selection(path, "sae", N_LAYERS, {5: 100, 6: 100})
    with pytest.raises(ConfigError, match=r"sae: layer 6 has no candidates"):
        load_manual_selection(path, "sae", N_LAYERS, {5: 1000})


def pca_summary(layers: tuple[int, ...] = (2, 4), k: int = 6) -> pd.DataFrame:
    rows = [
        {"layer": layer, "component": c, "explained_variance_ratio": 0.5 / (c + 1)}
        for layer in layers
        for c in reversed(range(k))
    ]
    return pd.DataFrame(rows)


def test_top_selection_takes_first_components() -> None:
    top = top_selection(pca_summary(), 3, method="pca", task="gender")
    assert top.selector == "top" and top.layers == {2: [0, 1, 2], 4: [0, 1, 2]}
    matched = top_selection(pca_summary(), {4: 2}, method="pca", task="gender")
    assert matched.layers == {4: [0, 1]}


def test_top_selection_generic_rank_column() -> None:
    summary = pd.DataFrame(
        {"layer": [5, 5, 5, 6], "latent": [900, 12, 40, 7], "rank": [2, 0, 1, 3]}
    )
    top = top_selection(summary, {5: 2, 6: 1}, method="sae", task="t", id_column="latent", rank_column="rank")
    assert top.layers == {5: [12, 40], 6: [7]}
    with pytest.raises(ConfigError, match="layer 6: cannot take 2 latents, the summary has 1"):
        top_selection(summary, {6: 2}, method="sae", task="t", id_column="latent", rank_column="rank")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['rank'\]"):
        top_selection(
            summary.drop(columns="rank"), 1, method="sae", task="t", id_column="latent", rank_column="rank"
        )


def test_random_selection_counts_determinism_and_candidates() -> None:
    candidates = {2: list(range(20)), 4: list(range(100, 150))}
    counts = {2: 3, 4: 5}
    first = random_selection(candidates, counts, seed=0, method="pca", task="gender")
    shuffled = {2: candidates[2][::-1], 4: candidates[4]}
    again = random_selection(shuffled, counts, seed=0, method="pca", task="gender")
    other = random_selection(candidates, counts, seed=1, method="pca", task="gender")
    assert first == again
    assert first.layer_counts() == counts == other.layer_counts()
    assert first.layers != other.layers
    assert first.seed == 0 and first.selector == "random"
    for layer, ids in first.layers.items():
        assert set(ids) <= set(candidates[layer]) and ids == sorted(set(ids))
    # a layer's draw does not depend on which other layers are drawn
    alone = random_selection(candidates, {4: 5}, seed=0, method="pca", task="gender")
    assert alone.layers[4] == first.layers[4]


def test_random_selection_errors() -> None:
    with pytest.raises(ConfigError, match="layer 2: 4 ids requested but only 3 candidates"):
        random_selection({2: [0, 1, 2]}, {2: 4}, seed=0, method="pca", task="t")
    with pytest.raises(ConfigError, match="layer 9: 1 ids requested but only 0 candidates"):
        random_selection({2: [0, 1, 2]}, {9: 1}, seed=0, method="pca", task="t")
    # the seed is a training seed: the schema keeps runs.seeds (and em.runs.seeds) non-negative
    with pytest.raises(ConfigError, match=r"key 'runs.seeds.0': -1 is less than the minimum of 0"):
        check_section("runs.seeds", [-1])


POOL = {2: list(range(20)), 4: list(range(100, 150)), 7: [3, 9]}
"""72 candidates over three layers of very different sizes."""


def pairs_of(selection: Selection) -> set[tuple[int, int]]:
    return {(layer, i) for layer, ids in selection.layers.items() for i in ids}


def test_random_pool_selection_draws_the_total_from_every_layer() -> None:
    pool_pairs = {(layer, i) for layer, ids in POOL.items() for i in ids}
    first = random_pool_selection(POOL, 6, seed=0, method="sae", task="gender", pool_name="scores.parquet: top")
    assert (first.selector, first.seed, first.method, first.count()) == ("random-pool", 0, "sae", 6)
    assert pairs_of(first) <= pool_pairs
    # the draw is positions in the pool sorted by (layer, id), from default_rng([seed, RANDOM_POOL_TAG])
    positions = np.random.default_rng([0, RANDOM_POOL_TAG]).choice(72, size=6, replace=False)
    assert pairs_of(first) == {sorted(pool_pairs)[int(k)] for k in positions}
    shuffled = {7: [9, 3], 4: POOL[4][::-1], 2: POOL[2]}
    assert random_pool_selection(shuffled, 6, seed=0, method="sae", task="gender",
                                 pool_name="scores.parquet: top") == first
    assert first.provenance == {
        "count": 6, "pool": "scores.parquet: top", "pool_size": 72, "pool_per_layer": {"2": 20, "4": 50, "7": 2},
        "rng": f"numpy.random.default_rng([seed, {RANDOM_POOL_TAG}]).choice(len(pool), count, replace=False) "
               "over the pool sorted by (layer, id)",
    }
    draws = [random_pool_selection(POOL, 6, seed=s, method="pca", task="t", pool_name="p") for s in range(300)]
    assert len({frozenset(pairs_of(d)) for d in draws}) == 300, "every seed draws a different set"
    # the layers are drawn too, in proportion to their share of the pool (not the manual counts per layer)
    assert len({tuple(sorted(d.layer_counts().items())) for d in draws}) > 10
    picks = [layer for d in draws for layer, ids in d.layers.items() for _ in ids]
    shares = {layer: picks.count(layer) / len(picks) for layer in POOL}
    assert shares == pytest.approx({2: 20 / 72, 4: 50 / 72, 7: 2 / 72}, abs=0.03)
    assert any(7 in d.layers for d in draws) and any(set(d.layers) == {4} for d in draws)
    # the whole pool is a valid draw
    assert pairs_of(random_pool_selection(POOL, 72, seed=5, method="pca", task="t", pool_name="p")) == pool_pairs


def test_random_pool_selection_errors() -> None:
    with pytest.raises(ConfigError, match=r"73 ids requested but the pool holds only 72: scores\.parquet: top$"):
        random_pool_selection(POOL, 73, seed=0, method="sae", task="t", pool_name="scores.parquet: top")
    with pytest.raises(ConfigError, match="count must be a positive integer, got 0"):
        random_pool_selection(POOL, 0, seed=0, method="sae", task="t", pool_name="p")


def sae_scores(path: Path) -> pd.DataFrame:
    """3 layers x 64 latents; layer 0 holds most of the 100 best effects, layer 2 few."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"layer": np.repeat([0, 1, 2], 64), "latent": np.tile(np.arange(64), 3)})
    frame["effect"] = rng.normal(size=len(frame)) + frame["layer"].map({0: 1.0, 1: 0.0, 2: -1.0})
    scores = rank_scores(frame, top_n=100)
    scores.to_parquet(path)
    return scores


def test_select_sae_random_pool_draws_from_the_top_100_over_all_layers(tmp_path: Path) -> None:
    scores = sae_scores(tmp_path / "scores.parquet")
    top = scores[scores["rank"] < 100]
    in_pool = set(zip(top["layer"], top["latent"]))
    assert len(in_pool) == 100 and top["layer"].nunique() == 3
    selections = []
    for seed in range(20):
        out = tmp_path / f"random-pool/seed{seed}.json"
        select_sae(f"random-pool/seed{seed}", "gender", SelectorConfig(count=7), tmp_path / "scores.parquet",
                   tmp_path, None, out)
        selections.append(Selection.load(out))
    first = selections[0]
    assert (first.selector, first.seed, first.count()) == ("random-pool", 0, 7)
    assert first.provenance["pool_size"] == 100 and first.provenance["count_from"] == "config"
    assert first.provenance["pool_per_layer"] == {str(k): int(v) for k, v in top.groupby("layer").size().items()}
    assert str(tmp_path / "scores.parquet") in first.provenance["pool"]
    for selection in selections:
        assert selection.count() == 7 and pairs_of(selection) <= in_pool
    assert len({tuple(sorted(s.layer_counts().items())) for s in selections}) > 1
    # rerunning a seed writes the same list
    select_sae("random-pool/seed0", "gender", SelectorConfig(count=7), tmp_path / "scores.parquet", tmp_path, None,
               tmp_path / "again.json")
    assert Selection.load(tmp_path / "again.json") == first
    with pytest.raises(ConfigError, match=r"101 ids requested but the pool holds only 100: .*scores\.parquet: the 100 "
                                          r"latents marked top, .* over all layers \(attribution\.top_n\)"):
        select_sae("random-pool/seed0", "gender", SelectorConfig(count=101), tmp_path / "scores.parquet", tmp_path,
                   None, tmp_path / "x.json")


def test_select_pca_random_pool_draws_from_the_union_of_layer_components(tmp_path: Path) -> None:
    summary = pd.DataFrame({"layer": np.repeat([1, 3, 5], 4), "component": np.tile(np.arange(4), 3)})
    summary.to_parquet(tmp_path / "summary.parquet")
    union = set(zip(summary["layer"], summary["component"]))
    selections = []
    for seed in range(20):
        out = tmp_path / f"seed{seed}.json"
        select_pca(f"random-pool/seed{seed}", "gender", SelectorConfig(count=5), tmp_path / "summary.parquet",
                   None, out)
        selections.append(Selection.load(out))
    for selection in selections:
        assert selection.count() == 5 and pairs_of(selection) <= union
    assert selections[0].provenance["pool_per_layer"] == {"1": 4, "3": 4, "5": 4}
    assert len({frozenset(pairs_of(s)) for s in selections}) > 15, "seeds draw different sets (792 possible)"
    assert len({tuple(sorted(s.layer_counts().items())) for s in selections}) > 1
    with pytest.raises(ConfigError, match=r"13 ids requested but the pool holds only 12: .*summary\.parquet: the "
                                          r"components of layers \[1, 3, 5\] \(pca\.components per layer\)"):
        select_pca("random-pool/seed0", "gender", SelectorConfig(count=13), tmp_path / "summary.parquet", None,
                   tmp_path / "x.json")
    with pytest.raises(ConfigError, match="expected manual, top, random/seed<N> or random-pool/seed<N>"):
        select_pca("random-poole/seed0", "gender", SelectorConfig(count=1), tmp_path / "summary.parquet", None,
                   tmp_path / "x.json")


def test_selector_config_reads_the_total_count() -> None:
    assert SelectorConfig.from_config({"count": 4}) == SelectorConfig(count=4)
    with pytest.raises(ConfigError, match=r"selection: unknown key\(s\) \['total'\]"):
        SelectorConfig.from_config({"total": 4})


def test_json_round_trip(tmp_path: Path) -> None:
    candidates = {3: list(range(10)), 12: list(range(10))}
    selection = random_selection(candidates, {3: 2, 12: 1}, seed=7, method="sae", task="x")
    path = tmp_path / "sel" / "random.json"
    selection.save(path)
    text = path.read_text()
    assert '"12": [' in text and '"seed": 7' in text
    assert Selection.load(path) == selection
    assert Selection.from_json(selection.to_json()) == selection


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    obj = Selection("pca", "manual", "t", None, {3: [1]}).to_json()
    obj["layers"] = {"3": [1, 1]}
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"bad\.json: selection layer 3: duplicate ids \[1\]"):
        Selection.load(path)
    path.write_text("{")
    with pytest.raises(DataError, match=r"bad\.json: cannot read selection"):
        Selection.load(path)


def test_projection_spec_uses_selected_columns() -> None:
    d, k = 16, 6
    components = {}
    for layer in (2, 4):
        gaussian = torch.randn(d, k, generator=torch.Generator().manual_seed(layer), dtype=torch.float64)
        q, _ = torch.linalg.qr(gaussian)
        components[layer] = q.to(torch.float32)
    selection = Selection("pca", "manual", "gender", None, {2: [4, 1], 4: [], 6: []})
    spec = projection_spec(selection, components)
    assert set(spec.bases) == {2}
    basis = spec.bases[2]
    assert basis.shape == (d, 2) and basis.dtype == torch.float32
    torch.testing.assert_close(basis, components[2][:, [1, 4]], atol=1e-5, rtol=0)
    torch.testing.assert_close(basis.T @ basis, torch.eye(2), atol=1e-5, rtol=0)
    assert spec.provenance["selection"] == selection.to_json()
    with pytest.raises(DataError, match=r"layer 2: ids \[6\] out of range: the components have 6 columns"):
        projection_spec(Selection("pca", "top", "gender", None, {2: [6]}), components)
    with pytest.raises(DataError, match="layer 3: no components"):
        projection_spec(Selection("pca", "top", "gender", None, {3: [0]}), components)


def explained_pcs() -> pd.DataFrame:
    """Rows (layer, component, sign, relevance, score) for thresholds 0.5 / 0.3."""
    rows = [
        (2, 0, "positive", 0.8, 0.5),  # both
        (2, 0, "negative", 0.2, 0.9),
        (2, 1, "positive", 0.6, 0.1),  # relevant end and trusted end differ: not selected
        (2, 1, "negative", 0.1, 0.7),
        (2, 2, "positive", np.nan, np.nan),  # relevant, but no score
        (2, 2, "negative", 0.55, np.nan),
        (5, 0, "positive", 0.9, 0.4),  # both
        (5, 0, "negative", 0.3, 0.2),
        (5, 3, "positive", 0.7, 0.35),  # both, best relevance 0.75
        (5, 3, "negative", 0.75, 0.6),
        (5, 4, "positive", 0.5, 0.3),  # both: thresholds are inclusive
        (5, 4, "negative", 0.4, 0.1),
        (5, 7, "positive", 0.2, 0.9),  # trusted but irrelevant
        (5, 7, "negative", np.nan, 0.8),
    ]
    columns = ["layer", "component", "sign", "relevance_explanation", "simulation_score"]
    return pd.DataFrame(rows, columns=columns).assign(explanation="x")


def test_auto_selection_thresholds_and_counts(tmp_path: Path) -> None:
    selection, counts = auto_selection(explained_pcs(), id_column="component", method="pca", task="gender",
                                       min_relevance=0.5, min_score=0.3, provenance={"query": "gender"})
    assert (selection.method, selection.selector, selection.task, selection.seed) == ("pca", "auto", "gender", None)
    assert selection.layers == {2: [0], 5: [0, 3, 4]}
    assert counts == {"candidates": 7, "relevance": 6, "score": 6, "both": 4, "selected": 4}
    assert selection.provenance == {"id_column": "component", "min_relevance": 0.5, "min_score": 0.3,
                                    "max_per_layer": None, "counts": counts, "query": "gender"}
    selection.save(tmp_path / "auto.json")
    assert Selection.load(tmp_path / "auto.json") == selection


def test_auto_selection_cap_and_no_score_threshold() -> None:
    capped, counts = auto_selection(explained_pcs(), id_column="component", method="pca", task="t",
                                    min_relevance=0.5, min_score=0.3, max_per_layer=2)
    assert capped.layers == {2: [0], 5: [0, 3]}  # layer 5 by best relevance: 0.9, 0.75, then 0.5
    assert counts == {"candidates": 7, "relevance": 6, "score": 6, "both": 4, "selected": 3}
    relevant, counts = auto_selection(explained_pcs(), id_column="component", method="pca", task="t",
                                      min_relevance=0.5, min_score=None)
    assert relevant.layers == {2: [0, 1, 2], 5: [0, 3, 4]}
    assert counts == {"candidates": 7, "relevance": 6, "score": 7, "both": 6, "selected": 6}
    latents = explained_pcs().query("sign == 'positive'").drop(columns=["sign", "simulation_score"])
    sae, counts = auto_selection(latents.rename(columns={"component": "latent"}), id_column="latent",
                                 method="sae", task="t", min_relevance=0.85, min_score=None)
    assert sae.layers == {5: [0]} and counts["selected"] == 1
    none, counts = auto_selection(explained_pcs(), id_column="component", method="pca", task="t",
                                  min_relevance=1.0, min_score=None)
    assert none.layers == {} and counts["selected"] == 0


def test_auto_selection_errors() -> None:
    explained = explained_pcs()
    kwargs = {"id_column": "component", "method": "pca", "task": "t"}
    with pytest.raises(DataError, match=r"lack column\(s\) \['simulation_score'\]"):
        auto_selection(explained.drop(columns="simulation_score"), **kwargs, min_relevance=0.5, min_score=0.3)
    with pytest.raises(DataError, match="'relevance_explanation' must be numeric"):
        auto_selection(explained.assign(relevance_explanation="high"), **kwargs, min_relevance=0.5, min_score=None)
    with pytest.raises(DataError, match="layer 2, component 0, sign positive twice"):
        auto_selection(pd.concat([explained, explained]), **kwargs, min_relevance=0.5, min_score=None)
    # the thresholds are the `selection.auto` section's, checked by the schema
    with pytest.raises(ConfigError, match=r"key 'selection.auto.min_relevance': nan is not a finite number"):
        check_section("selection.auto.min_relevance", float("nan"))
    with pytest.raises(ConfigError, match=r"key 'selection.auto.min_score': '0.3' is not of type 'number', 'null'"):
        check_section("selection.auto.min_score", "0.3")
    with pytest.raises(ConfigError, match=r"key 'selection.auto.max_per_layer': 0 is less than the minimum of 1"):
        check_section("selection.auto.max_per_layer", 0)


# --- manual selections written as a rule over the dashboard's windows ----------------------------------

RULE = """\
sae:
  rule: {peak_tokens: [is, are], min_windows: 3, of_top: 4, ends: [positive]}
  notes: latents on auxiliary verbs
pca:
  rule: {peak_tokens: [is, are], min_windows: 3, of_top: 4, ends: [positive, negative]}
"""


def windows_frame(peaks: dict[tuple[int, int, str], list[str]], id_column: str) -> pd.DataFrame:
    """One window per listed peak token, ranked in list order: tokens ``["x", peak, "y"]`` with the peak
    in the middle (negative ends: the most negative value there), plus one random window per direction."""
    rows = []
    for (layer, ident, sign), tokens in peaks.items():
        for rank, token in enumerate(tokens):
            values = [0.1, 2.0, 0.3] if sign == "positive" else [-0.1, -2.0, -0.3]
            rows.append({"layer": layer, id_column: ident, "sign": sign, "rank": rank,
                         "tokens": [" x", f" {token}", " y"], "values": values, "peak": values[1]})
        rows.append({"layer": layer, id_column: ident, "sign": "random", "rank": 0,
                     "tokens": [" is", " a", " b"], "values": [5.0, 0.0, 0.0], "peak": 5.0})
    return pd.DataFrame(rows)


def saved(tmp_path: Path, windows: pd.DataFrame, name: str = "windows.parquet") -> Path:
    windows.to_parquet(tmp_path / name)
    return tmp_path / name


def test_rule_selection_chooses_the_directions_whose_top_windows_peak_on_the_tokens(tmp_path: Path) -> None:
    path = write(tmp_path, RULE, "verbs_sentiment_1.yaml")
    windows = windows_frame({
        (4, 10, "positive"): ["is", "is", "are", "the"],          # 3 of the top 4: chosen
        (4, 11, "positive"): ["is", "is", "the", "a", "is"],      # the 5th window lies beyond of_top: not chosen
        (6, 537, "positive"): ["are", "are", "are", "are"],       # chosen
        (6, 538, "positive"): ["Is", "IS", "is", "the"],          # exact match: only 1
        (8, 2, "positive"): [],                                   # never fires: no top windows
    }, "latent")
    selection = load_manual_selection(path, "sae", N_LAYERS, {4: 1024, 6: 1024, 8: 1024}, windows_path=saved(tmp_path, windows),
                                      id_column="latent")
    assert selection.layers == {4: [10], 6: [537]} and selection.selector == "manual"
    assert selection.task == "verbs_sentiment_1"
    assert selection.provenance["matches"] == {"L4 #10 positive": '"is" ×2, "are" ×1, "the" ×1',
                                               "L6 #537 positive": '"are" ×4'}
    assert selection.provenance["rule"] == {"peak_tokens": ["is", "are"], "min_windows": 3, "of_top": 4,
                                            "ends": ["positive"]}
    assert selection.provenance["notes"] == "latents on auxiliary verbs"
    assert selection.provenance["windows"]["file"] == str(tmp_path / "windows.parquet")
    assert len(selection.provenance["windows"]["sha256"]) == 64


def test_rule_selection_reads_the_ends_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, RULE, "verbs_sentiment_1.yaml")
    windows = windows_frame({
        (3, 7, "negative"): ["is", "are", "is", "is"],   # the negative end counts for pca (ends: both)
        (3, 7, "positive"): ["the", "a", "of", "to"],
        (5, 1, "positive"): ["are", "are", "is", "x"],
        (5, 1, "negative"): ["are", "are", "is", "x"],   # both ends: the id once
    }, "component")
    pca = load_manual_selection(path, "pca", N_LAYERS, N_IDS, windows_path=saved(tmp_path, windows))
    assert pca.layers == {3: [7], 5: [1]}
    assert set(pca.provenance["matches"]) == {"L3 #7 negative", "L5 #1 positive", "L5 #1 negative"}
    sae_windows = windows.rename(columns={"component": "latent"})
    sae = load_manual_selection(path, "sae", N_LAYERS, 1024, windows_path=saved(tmp_path, sae_windows, "sae.parquet"), id_column="latent")
    assert sae.layers == {5: [1]}, "ends: [positive] ignores the negative windows of L3 #7"


def test_rule_selection_errors_name_the_file(tmp_path: Path) -> None:
    windows = windows_frame({(4, 10, "positive"): ["the", "a", "of", "to"]}, "latent")
    path = write(tmp_path, RULE, "verbs_sentiment_1.yaml")
    with pytest.raises(DataError, match=r"verbs_sentiment_1\.yaml: sae: the rule .* chooses none of the 1 directions"):
        load_manual_selection(path, "sae", N_LAYERS, 1024, windows_path=saved(tmp_path, windows), id_column="latent")
    shallow = windows_frame({(4, 10, "positive"): ["is", "is", "is"]}, "latent")
    with pytest.raises(DataError, match=r"verbs_sentiment_1\.yaml: sae: the rule reads the 4 strongest windows of "
                                        r"each end, but the windows table keeps at most 3 \(windows.per_component\)"):
        load_manual_selection(path, "sae", N_LAYERS, 1024, windows_path=saved(tmp_path, shallow), id_column="latent")
    with pytest.raises(DataError, match=r"verbs_sentiment_1\.yaml: sae: the selection is a rule, which needs the "
                                        "method's windows table"):
        load_manual_selection(path, "sae", N_LAYERS, 1024)
    both = write(tmp_path, "sae:\n  layers: {4: [1]}\n  rule: {peak_tokens: [is], min_windows: 1, of_top: 1, "
                           "ends: [positive]}\n", "both.yaml")
    with pytest.raises(ConfigError, match=r"both\.yaml: sae: give either 'layers' .* or 'rule' .*exactly one"):
        load_manual_selection(both, "sae", N_LAYERS, 1024, windows_path=saved(tmp_path, windows), id_column="latent")
    bad = {
        "{peak_tokens: [is], min_windows: 1, of_top: 1}": r"missing key\(s\) \['ends'\]",
        "{peak_tokens: [], min_windows: 1, of_top: 1, ends: [positive]}": "'peak_tokens' must be a non-empty list",
        "{peak_tokens: [is], min_windows: 5, of_top: 4, ends: [positive]}": r"'min_windows' must be an integer in "
                                                                           r"1\.\.of_top \(4\), got 5",
        "{peak_tokens: [is], min_windows: 1, of_top: 4, ends: [top]}": "'ends' must list distinct ends",
        "[is, are]": "'rule' must be a mapping like",
    }
    for rule, message in bad.items():
        path = write(tmp_path, f"sae:\n  rule: {rule}\n", "bad.yaml")
        with pytest.raises(ConfigError, match=rf"bad\.yaml: sae: .*{message}"):
            load_manual_selection(path, "sae", N_LAYERS, 1024, windows_path=saved(tmp_path, windows), id_column="latent")


def test_random_baselines_match_the_manual_selection_artifact(tmp_path: Path) -> None:
    """The random rows draw as many latents as the manual artifact holds (a rule's count is known only once
    applied): per layer for random, in total for random-pool; explicit counts (EM without a file) win."""
    sae_scores(tmp_path / "scores.parquet")
    manual = Selection(method="sae", selector="manual", task="gender", seed=None, layers={0: [1, 2, 3], 2: [5]})
    manual.save(tmp_path / "manual.json")
    for variant in ("random/seed0", "random-pool/seed0"):
        out = tmp_path / f"{variant}.json"
        select_sae(variant, "gender", SelectorConfig(), tmp_path / "scores.parquet", tmp_path, None, out,
                   manual_selection_path=tmp_path / "manual.json")
        drawn = Selection.load(out)
        assert drawn.count() == 4
        assert str(tmp_path / "manual.json") in json.dumps(drawn.provenance)
    assert Selection.load(tmp_path / "random/seed0.json").layer_counts() == {0: 3, 2: 1}
    select_sae("random-pool/seed0", "gender", SelectorConfig(count=2), tmp_path / "scores.parquet", tmp_path, None,
               tmp_path / "explicit.json", manual_selection_path=tmp_path / "manual.json")
    assert Selection.load(tmp_path / "explicit.json").count() == 2
    with pytest.raises(ConfigError, match="the random-pool/seed0 baseline draws as many directions as the manual "
                                          "selection: it needs the manual selection's artifact, or explicit counts"):
        select_sae("random-pool/seed0", "gender", SelectorConfig(), tmp_path / "scores.parquet", tmp_path, None,
                   tmp_path / "x.json")
