"""The diagnostics through Snakemake on a tiny model: skyline and oracle conditions, intervention modes,
and the task survey with the paper's filter as a checkpoint."""

import copy
import json

import pandas as pd
import pytest

from caft.ablation.specs import load_spec
from tests.workflow_helpers import (
    TINY_CONFIG,
    make_workflow_copy,
    snakemake,
    summary_plan,
    untracked_code,
    write_config,
)

pytestmark = pytest.mark.workflow

TASKS = ("gender", "verbs_sports_1")


def diagnostics_config(model_dir) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["model"] = {"name": str(model_dir)}
    config["runs"] = {"tasks": list(TASKS), "seeds": [0], "test_only": True,
                      "conditions": ["none", "skyline", "oracle/mean-diff", "oracle/leace"]}
    config["finetune"] = {"lr": 1e-3, "batch_size": 16, "epochs": {"frames": 1, "mcmc": 1}, "warmup_ratio": 0.1}
    config["interventions"] = {"mode": "gradient"}
    config["oracle"] = {"layers": [0, 1], "max_examples": 64}
    # min_none_val 0.5: the tiny model learns little in one epoch, and the test needs skylines to run
    config["survey"] = {"pairs": ["verbs_sports"], "frame_tasks": ["gender"], "min_none_val": 0.5}
    return config


@pytest.fixture(scope="module")
def diagnostics(tmp_path_factory, tiny_model_dir):
    workdir = make_workflow_copy(tmp_path_factory.mktemp("diagnostics"), diagnostics_config(tiny_model_dir))
    snakemake(workdir, "--cores", "2", "--workflow-profile", "none")
    snakemake(workdir, "survey", "--cores", "2", "--workflow-profile", "none")
    return workdir


def run_meta(workdir, task, method, selector):
    return json.loads((workdir / f"results/{task}/runs/{method}/{selector}/seed0/run.json").read_text())


def test_skyline_trains_on_the_decorrelated_split_with_the_intended_answer(diagnostics):
    gender = run_meta(diagnostics, "gender", "skyline", "skyline")
    assert gender["answer"] == "target" and gender["spec"] is None
    assert gender["train_examples"] == len(pd.read_parquet(diagnostics / "results/data/gender/skyline.parquet"))
    mcmc = run_meta(diagnostics, "verbs_sports_1", "skyline", "skyline")
    assert mcmc["answer"] == "answer_b"  # intended index 1: trained on the second question's answers
    # no-intervention runs stay shared by the pair's two indices; the skyline is per index
    assert not (diagnostics / "results/verbs_sports_1/runs/none").exists()


def test_oracle_specs_erase_at_the_configured_layers(diagnostics):
    leace = load_spec(diagnostics / "results/verbs_sports_1/interventions/oracle/leace.safetensors")
    mean_diff = load_spec(diagnostics / "results/verbs_sports_1/interventions/oracle/mean-diff.safetensors")
    assert leace.layers == mean_diff.layers == [0, 1]
    assert set(leace.readouts) == {0, 1} and not mean_diff.readouts
    assert leace.positions == mean_diff.positions == "last"
    assert leace.provenance["config"]["spurious"] == "answer_a"  # the other question's letter
    # as many agreeing examples as there are disagreeing ones: the 14 of the skyline split (half of its 28)
    assert leace.provenance["examples"] == 28
    log = (diagnostics / "results/logs/oracle_directions/verbs_sports_1/leace.log").read_text()
    assert "layer 1: shortcut label read by class means with accuracy" in log and "after erasure" in log


def test_runs_record_their_mode_and_only_hooked_runs_have_one(diagnostics):
    assert run_meta(diagnostics, "gender", "oracle", "leace")["mode"] == "gradient"
    assert run_meta(diagnostics, "gender", "none", "none")["mode"] is None


def test_ood_table_has_skyline_and_oracle_rows(diagnostics):
    table = pd.read_parquet(diagnostics / "results/tables/ood_accuracy.parquet")
    rows = set(zip(table["task"], table["method"], table["selector"], table["mode"]))
    for task in TASKS:
        assert (task, "skyline", "skyline", "deployed") in rows
        assert (task, "skyline", "skyline", "hooked") not in rows
        for eraser in ("mean-diff", "leace"):
            assert {(task, "oracle", eraser, m) for m in ("deployed", "hooked", "test-only")} <= rows
    assert "| skyline |" in (diagnostics / "results/tables/ood_accuracy.md").read_text()


def test_survey_runs_the_skyline_only_where_the_paper_filter_passes(diagnostics):
    paper = json.loads((diagnostics / "results/survey/paper_filter.json").read_text())
    assert sorted(paper["tasks"]) == ["gender", "verbs_sports_0", "verbs_sports_1"]
    table = pd.read_parquet(diagnostics / "results/survey/survey.parquet").set_index("task")
    for task in paper["tasks"]:
        passing = table.loc[task, "none_ood"] < 0.9 and table.loc[task, "none_val"] >= 0.5
        assert passing == (task in paper["passing"])
        assert pd.notna(table.loc[task, "skyline_ood"]) == (task in paper["passing"])
    # the two indices of a pair are scored from one no-intervention run: OOD A/B accuracies sum to 1
    assert table.loc["verbs_sports_0", "none_ood"] + table.loc["verbs_sports_1", "none_ood"] == pytest.approx(1.0)
    assert table.loc["verbs_sports_1", ["intended", "spurious"]].tolist() == ["sports", "verbs"]
    eligible = json.loads((diagnostics / "results/survey/eligible.json").read_text())
    assert eligible["eligible"] == table.index[table["eligible"]].tolist()
    assert eligible["criteria"]["skyline_ood_at_least"] == 0.9
    assert (diagnostics / "results/survey/survey.png").read_bytes()[:4] == b"\x89PNG"


def test_changing_the_mode_reruns_only_runs_with_directions(diagnostics, tiny_model_dir):
    config = diagnostics_config(tiny_model_dir)
    config["interventions"]["mode"] = "activation"
    write_config(diagnostics, config)
    try:
        stale = {path for path, plan in summary_plan(diagnostics).items() if plan != "no update"}
    finally:
        write_config(diagnostics, diagnostics_config(tiny_model_dir))
    runs = {path for path in stale if "/runs/" in path}
    assert runs and all("/oracle/" in p for p in runs)
    assert not any("/interventions/" in p for p in stale)


def test_every_job_ran_only_code_its_rule_tracks(diagnostics):
    """The package files each job of skyline, oracle and survey executed are all inputs of its rule (`library_code`)."""
    assert untracked_code(diagnostics) == {}
