"""The whole fine-tuning chain through Snakemake on a tiny model: runs, evaluations, tables, reruns."""

import copy
import json

import pandas as pd
import pytest

from caft.artifacts import read_parquet_metadata
from tests.workflow_helpers import (
    TINY_CONFIG,
    make_workflow_copy,
    snakemake,
    summary_plan,
    untracked_code,
    write_config,
)

pytestmark = pytest.mark.workflow

SEEDS = (0, 1)


def chain_config(model_dir) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["model"] = {"name": str(model_dir)}
    config["runs"] = {"tasks": ["gender", "verbs_sports_1"], "seeds": list(SEEDS),
                      "conditions": ["none", "random/random"], "test_only": True}
    config["finetune"] = {"lr": 1e-3, "batch_size": 16, "epochs": {"frames": 1, "mcmc": 1}, "warmup_ratio": 0.1}
    config["interventions"] = {"layers": [1], "random": {"k": 4}}
    return config


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir):
    workdir = make_workflow_copy(tmp_path_factory.mktemp("chain"), chain_config(tiny_model_dir))
    snakemake(workdir, "--cores", "2", "--workflow-profile", "none")
    return workdir


def test_every_run_is_trained_once_and_shared_between_intended_indices(chain):
    runs = sorted(p.parent.relative_to(chain / "results").as_posix() for p in chain.glob("results/*/runs/*/*/*/run.json"))
    assert runs == [
        *(f"gender/runs/none/none/seed{s}" for s in SEEDS),
        *(f"gender/runs/random/random/seed{s}" for s in SEEDS),
        *(f"verbs_sports/runs/none/none/seed{s}" for s in SEEDS),
        *(f"verbs_sports_1/runs/random/random/seed{s}" for s in SEEDS),
    ]
    meta = json.loads((chain / "results/gender/runs/random/random/seed1/run.json").read_text())
    assert meta["spec"]["provenance"] == {"selector": "random", "k": 4, "seed": 1}
    assert (chain / "results/gender/runs/random/random/seed1/model/model.safetensors").exists()


def test_ood_table_has_every_condition_with_seed_statistics(chain):
    table = pd.read_parquet(chain / "results/tables/ood_accuracy.parquet")
    rows = set(zip(table["task"], table["method"], table["mode"], table["split"]))
    for task in ("gender", "verbs_sports_1"):
        for split in ("val", "ood"):
            assert {(task, "none", "deployed", split), (task, "random", "deployed", split),
                    (task, "random", "hooked", split), (task, "random", "test-only", split)} <= rows
    assert (table["seeds"] == 2).all()
    assert read_parquet_metadata(chain / "results/tables/ood_accuracy.parquet")["stage"] == "ood_table"
    assert (chain / "results/tables/ood_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no intervention" in (chain / "results/tables/ood_accuracy.md").read_text()


def test_mcmc_evaluation_scores_the_intended_question(chain):
    predictions = pd.read_parquet(chain / "results/verbs_sports_1/eval/none/none/seed0/trained/predictions.parquet")
    ood = pd.read_parquet(chain / "results/data/verbs_sports/ood.parquet")
    scored = predictions[predictions["split"] == "ood"].sort_values("row")
    assert scored["answer"].tolist() == ood["answer_b"].tolist()


def test_changing_the_recipe_reruns_training_and_evaluation_only(chain, tiny_model_dir):
    config = chain_config(tiny_model_dir)
    config["finetune"]["lr"] = 2e-3
    write_config(chain, config)
    try:
        stale = {path for path, plan in summary_plan(chain).items() if plan != "no update"}
    finally:
        write_config(chain, chain_config(tiny_model_dir))
    assert stale and all("/runs/" in p or "/eval/" in p or p.startswith("results/tables/") for p in stale)
    assert not any("/interventions/" in p or p.startswith("results/data/") or "models/base" in p for p in stale)
    assert {path for path, plan in summary_plan(chain).items() if plan != "no update"} == set()


def test_keeping_checkpoints_or_not_reruns_nothing(chain, tiny_model_dir):
    config = chain_config(tiny_model_dir)
    config["finetune"]["keep_checkpoints"] = False
    write_config(chain, config)
    try:
        stale = {path for path, plan in summary_plan(chain).items() if plan != "no update"}
    finally:
        write_config(chain, chain_config(tiny_model_dir))
    assert stale == set()


def test_every_job_ran_only_code_its_rule_tracks(chain):
    """The package files each job of fine-tuning and evaluation executed are all inputs of its rule (`library_code`)."""
    assert untracked_code(chain) == {}
