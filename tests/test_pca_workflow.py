"""The PCA chain through Snakemake on a tiny model: every artifact, and reruns of exactly what a
manual-selection edit makes stale. The chain is shared with the SAE tests (`tests.fixtures_chains`)."""

import json

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from caft.ablation.specs import load_spec
from caft.directions.moments import load_moments
from caft.interpret.dashboard import card_data
from tests.fixtures_chains import DIRECTIONS_MANUAL
from tests.workflow_helpers import summary_plan, untracked_code

MANUAL = DIRECTIONS_MANUAL
pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def pca_chain(directions_chain):
    """The chain shared with the SAE tests (`tests.fixtures_chains.directions_config`)."""
    return directions_chain


def test_pca_artifacts(pca_chain):
    results = pca_chain / "results"
    corpus = pd.read_parquet(results / "corpus/corpus.parquet")
    assert (corpus["piece"] == 0).sum() == 8 and (corpus["n_tokens"] <= 24).all()  # 8 documents, split
    summary = pd.read_parquet(results / "gender/pca/components.parquet")
    assert sorted(set(summary["layer"])) == [0, 1] and (summary.groupby("layer").size() == 4).all()
    with safe_open(results / "gender/pca/components.safetensors", "pt") as handle:
        assert handle.get_tensor("layer_0").shape == (32, 4)
    windows = pd.read_parquet(results / "gender/pca/windows.parquet")
    assert set(windows["sign"]) == {"positive", "negative", "random", "quantile"}
    html = (results / "gender/pca/dashboard.html").read_text()
    assert 'id="L0-C2"' in html and "manual" in html and "http://" not in html
    # the cards' profiles: one per component, the numbers on the page equal the artifact's
    profiles = pd.read_parquet(results / "gender/pca/profiles.parquet")
    assert list(zip(profiles["layer"], profiles["component"])) == list(zip(summary["layer"], summary["component"]))
    corpus_tokens = int((corpus["n_tokens"] - 1).sum())  # every token but BOS
    assert (profiles["tokens"] == corpus_tokens).all() and profiles["example_rows"].map(len).eq(3).all()
    assert profiles["hist_counts"].map(sum).eq(corpus_tokens).all()  # the tiny corpus fits the sample
    cards = {(c["layer"], c["id"]): c["profile"] for c in card_data(html)}
    for row in profiles.to_dict("records"):
        page = cards[row["layer"], row["component"]]
        assert page["max"] == row["max"] and page["quantiles"] == list(row["quantiles"])
        assert page["promoted"] == list(row["promoted"]) and page["ab_logit_diff"] == row["ab_logit_diff"]


def test_selections_and_specs(pca_chain):
    results = pca_chain / "results/gender"
    manual = json.loads((results / "selections/pca/manual.json").read_text())
    assert manual["layers"] == {"0": [0, 2], "1": [1]} and manual["provenance"]["notes"] == "tiny test selection"
    top = json.loads((results / "selections/pca/top.json").read_text())
    assert top["layers"] == {"0": [0, 1], "1": [0, 1]}
    random = json.loads((results / "selections/pca/random/seed0.json").read_text())
    assert {k: len(v) for k, v in random["layers"].items()} == {"0": 2, "1": 1}
    spec = load_spec(results / "interventions/pca/manual.safetensors")
    assert spec.layers == [0, 1] and spec.bases[0].shape == (32, 2) and spec.bases[1].shape == (32, 1)


def test_steering_specs_push_along_the_selected_components(pca_chain):
    """steer/manual: c = 2 times the mean tuned − base difference projected on the manual components;
    steer/random: as hard per layer, along the layer-matched random components."""
    results = pca_chain / "results/gender"
    moments, _ = load_moments(pca_chain / "results/gender/pca/moments.safetensors")
    steer = load_spec(results / "interventions/steer/manual.safetensors")
    pca = load_spec(results / "interventions/pca/manual.safetensors")
    assert steer.kind == "steering" and steer.layers == pca.layers == [0, 1]
    for layer, q in pca.bases.items():
        mean = (moments[layer].sum / moments[layer].count).double()
        expected = 2.0 * q.double() @ (q.double().T @ mean)
        torch.testing.assert_close(steer.shifts[layer].double(), expected, rtol=1e-5, atol=1e-6)
    random = load_spec(results / "interventions/steer/random/seed0.safetensors")
    random_basis = load_spec(results / "interventions/pca/random/seed0.safetensors").bases
    for layer, shift in random.shifts.items():
        assert float(shift.norm()) == pytest.approx(float(steer.shifts[layer].norm()), rel=1e-5)
        q = random_basis[layer]
        assert (shift - q @ (q.T @ shift)).abs().max() < 1e-4
    meta = json.loads((results / "runs/steer/manual/seed0/run.json").read_text())
    assert meta["mode"] == "project"


def test_table_has_caft_pca_rows(pca_chain):
    table = pd.read_parquet(pca_chain / "results/tables/ood_accuracy.parquet")
    conditions = set(zip(table["method"], table["selector"], table["mode"]))
    assert {("pca", "manual", "deployed"), ("pca", "top", "deployed"), ("pca", "random", "deployed"),
            ("pca", "manual", "hooked"), ("none", "none", "deployed"), ("steer", "manual", "deployed"),
            ("steer", "manual", "hooked"), ("steer", "random", "deployed")} <= conditions


def test_editing_the_manual_selection_reruns_only_what_depends_on_it(pca_chain):
    """Only the PCA manual chain: the SAE section of the same file is untouched, so nothing made from it reruns."""
    manual = pca_chain / "config/selections/gender.yaml"
    manual.write_text(MANUAL.replace("0: [0, 2]", "0: [1, 3]"))
    try:
        stale = {path for path, plan in summary_plan(pca_chain).items() if plan != "no update"}
    finally:
        manual.write_text(MANUAL)
    expected_prefixes = ("results/gender/selections/pca/manual", "results/gender/interventions/pca/manual",
                         "results/gender/runs/pca/manual/", "results/gender/eval/pca/manual/",
                         "results/gender/interventions/steer/", "results/gender/runs/steer/",
                         "results/gender/eval/steer/",
                         "results/gender/pca/dashboard.html", "results/tables/")
    assert stale and all(p.startswith(expected_prefixes) for p in stale), sorted(stale)
    assert any(p.startswith("results/gender/runs/pca/manual/") for p in stale)


def test_every_job_ran_only_code_its_rule_tracks(pca_chain):
    """The package files each job of the PCA and SAE chain executed are all inputs of its rule (`library_code`)."""
    assert untracked_code(pca_chain) == {}
