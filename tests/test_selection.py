"""Selections: the manual YAML format and its errors, the top/random baselines, JSON, projection specs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from caft.ablation.selection import (
    Selection,
    auto_selection,
    load_manual_selection,
    projection_spec,
    random_selection,
    top_selection,
)
from caft.errors import ConfigError, DataError

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
    assert pca.provenance["file"] == str(path) and len(pca.provenance["sha256"]) == 64
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
        ("pca:\n  notes: hi\n", r"pca: missing 'layers'"),
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
    with pytest.raises(ConfigError, match="seed"):
        random_selection({2: [0]}, {2: 1}, seed=-1, method="pca", task="t")


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
    with pytest.raises(ConfigError, match="min_relevance must be a finite number, got nan"):
        auto_selection(explained, **kwargs, min_relevance=float("nan"), min_score=None)
    with pytest.raises(ConfigError, match="min_score must be a finite number, got '0.3'"):
        auto_selection(explained, **kwargs, min_relevance=0.5, min_score="0.3")
    with pytest.raises(ConfigError, match="max_per_layer must be a positive integer"):
        auto_selection(explained, **kwargs, min_relevance=0.5, min_score=None, max_per_layer=0)
