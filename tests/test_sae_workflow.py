"""The SAE chain through Snakemake on a tiny model: SAEs trained on corpus activations, attribution
scores, windows, dashboard, selections, both kinds of spec, CAFT-SAE rows in the table, and reruns
of exactly what an SAE-training edit makes stale. The chain is shared with the PCA tests
(`tests.fixtures_chains`), which also check the code each of its jobs ran."""

import json

import pandas as pd
import pytest
import torch
import yaml
from sae_lens import SAE

from caft.ablation.specs import MEANS_FORMAT, load_spec
from caft.artifacts import load_tensors, read_parquet_metadata
from caft.interpret.dashboard import card_data
from tests.workflow_helpers import summary_plan, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def sae_chain(directions_chain):
    """The chain shared with the PCA tests (`tests.fixtures_chains.directions_config`)."""
    return directions_chain


def test_saes_are_sae_lens_folders_with_a_training_report(sae_chain):
    saes = sae_chain / "results/saes"
    for layer in (0, 1):
        sae = SAE.load_from_disk(saes / f"layer_{layer}")
        assert (sae.cfg.d_in, sae.cfg.d_sae) == (32, 64)
        report = pd.read_parquet(saes / f"reports/layer_{layer}.parquet").iloc[0]
        assert report["source"] == "train" and report["architecture"] == "topk"
        assert report["l0"] == pytest.approx(4.0) and report["tokens"] == 4096 and report["fvu"] >= 0


def test_attribution_scores(sae_chain):
    scores = pd.read_parquet(sae_chain / "results/gender/sae/scores.parquet")
    assert len(scores) == 2 * 64 and set(scores["layer"]) == {0, 1}
    assert sorted(scores["rank"]) == list(range(128)) and scores["top"].sum() == 40
    best = scores.sort_values("rank")
    assert best["effect"].is_monotonic_decreasing
    assert best["exact_effect"].notna().sum() == 4 and best["exact_effect"].head(4).notna().all()
    assert best["validation_effect"].notna().sum() == 4  # the estimate on the 20 validation prompts
    validation = read_parquet_metadata(sae_chain / "results/gender/sae/scores.parquet")["validation"]
    assert validation["validated"] == 4 and validation["prompts"] == 20


def test_windows_and_dashboard(sae_chain):
    results = sae_chain / "results/gender/sae"
    windows = pd.read_parquet(results / "windows.parquet")
    scores = pd.read_parquet(results / "scores.parquet")
    top = set(zip(scores.loc[scores["top"], "layer"], scores.loc[scores["top"], "latent"]))
    assert set(windows["sign"]) <= {"positive", "random", "quantile"}
    assert set(zip(windows["layer"], windows["latent"])) <= top
    assert (windows.query("sign == 'positive'")["peak"] > 0).all()
    assert (windows.query("sign == 'random'").groupby(["layer", "latent"]).size() == 1).all()
    html = (results / "dashboard.html").read_text()
    assert "training report" in html and "exact ablation" in html and "http://" not in html
    profiles = pd.read_parquet(results / "profiles.parquet")
    assert set(zip(profiles["layer"], profiles["latent"])) == top
    assert profiles["density"].between(0, 1).all()
    assert (profiles["hist_counts"].map(sum) <= profiles["tokens"] * profiles["density"] + 0.5).all()  # active only
    cards = {(c["layer"], c["id"]): c for c in card_data(html)}
    for row in profiles.to_dict("records"):
        card = cards[row["layer"], row["latent"]]
        assert card["fields"]["corpus_density"] == row["density"] == card["profile"]["density"]
        assert card["profile"]["suppressed"] == list(row["suppressed"])
    first = scores.sort_values("rank").iloc[0]
    assert f'id="L{first["layer"]}-C{first["latent"]}"' in html


def test_explanations_and_auto_selection(sae_chain):
    results = sae_chain / "results/gender"
    explained = pd.read_parquet(results / "sae/explanations.parquet")
    scores = pd.read_parquet(results / "sae/scores.parquet")
    windows = pd.read_parquet(results / "sae/windows.parquet")
    active = set(zip(*windows.query("sign == 'positive'")[["layer", "latent"]].values.T))
    top = set(zip(scores.loc[scores["top"], "layer"], scores.loc[scores["top"], "latent"]))
    assert set(explained["sign"]) == {"positive"}
    # every top latent that fires on the corpus is explained; one that never fires has no top windows
    assert set(zip(explained["layer"], explained["latent"])) == active & top and len(explained) >= 30
    assert explained["relevance_explanation"].between(-1, 1).all()
    auto = json.loads((results / "selections/sae/auto.json").read_text())
    assert auto["selector"] == "auto" and all(len(ids) <= 2 for ids in auto["layers"].values())
    assert sum(len(ids) for ids in auto["layers"].values()) == 4  # relevance −1 keeps all; the cap keeps 2 per layer
    html = (results / "sae/dashboard.html").read_text()
    assert "relevance_explanation" in html and "b-auto" in html


def test_selections_and_specs(sae_chain):
    results = sae_chain / "results/gender"
    manual = json.loads((results / "selections/sae/manual.json").read_text())
    assert manual["layers"] == {"0": [1, 5], "1": [3]}
    top = json.loads((results / "selections/sae/top.json").read_text())
    scores = pd.read_parquet(results / "sae/scores.parquet").sort_values("rank").head(3)
    assert sorted((int(k), i) for k, ids in top["layers"].items() for i in ids) == sorted(
        zip(scores["layer"], scores["latent"])
    )
    random = json.loads((results / "selections/sae/random/seed0.json").read_text())
    pool = pd.read_parquet(results / "sae/scores.parquet").query("top")
    assert {k: len(v) for k, v in random["layers"].items()} == {"0": 2, "1": 1}
    assert all(((pool["layer"] == int(k)) & (pool["latent"] == i)).any() for k, ids in random["layers"].items()
               for i in ids)
    projection = load_spec(results / "interventions/sae/manual.safetensors")
    assert projection.kind == "projection" and projection.bases[0].shape == (32, 2)
    decoder = SAE.load_from_disk(sae_chain / "results/saes/layer_0").W_dec.detach()[[1, 5]]
    residual = decoder.T - projection.bases[0] @ (projection.bases[0].T @ decoder.T)
    assert residual.abs().max() < 1e-4  # the basis spans exactly the selected decoder rows
    latent = load_spec(results / "interventions/sae-latent/manual.safetensors")
    assert latent.kind == "latent" and latent.latents == {0: [1, 5], 1: [3]}
    # interventions.center: the projection mean-ablates around the corpus mean residual of each layer
    means, _ = load_tensors(sae_chain / "results/corpus/residual_means.safetensors", MEANS_FORMAT)
    assert set(projection.centers) == {0, 1} and torch.equal(projection.centers[1], means["layer_1"])


def test_table_has_caft_sae_rows(sae_chain):
    table = pd.read_parquet(sae_chain / "results/tables/ood_accuracy.parquet")
    conditions = set(zip(table["method"], table["selector"], table["mode"]))
    assert {("sae", "manual", "deployed"), ("sae", "top", "deployed"), ("sae", "random", "deployed"),
            ("sae-latent", "manual", "deployed"), ("sae-latent", "manual", "hooked"),
            ("sae", "manual", "hooked"), ("sae", "auto", "deployed"), ("none", "none", "deployed")} <= conditions


def test_changing_sae_training_reruns_the_sae_chain_only(sae_chain):
    original = (sae_chain / "config/config.yaml").read_text()
    config = yaml.safe_load(original)
    config["saes"]["train"]["k"] = 8
    write_config(sae_chain, config)
    try:
        stale = {path for path, plan in summary_plan(sae_chain).items() if plan != "no update"}
    finally:
        (sae_chain / "config/config.yaml").write_text(original)
    assert "results/saes/layer_0" in stale and "results/gender/sae/scores.parquet" in stale
    assert "results/saes/activations.safetensors" not in stale
    assert not any(path.startswith(("results/corpus", "results/data", "results/gender/runs/none")) for path in stale)
