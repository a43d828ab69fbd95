"""The real workflow on a tiny config: artifacts, no-op reruns, reruns of exactly the stale tasks, lint."""

import copy
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from caft.artifacts import read_parquet_metadata
from caft.data.tasks import SPLITS
from caft.directions.attribution import rank_scores
from tests.workflow_helpers import (
    ROOT,
    TINY_CONFIG,
    leave_embedded_checkpoint,
    make_workflow_copy,
    offline_hf_env,
    snakemake,
    summary_plan,
    untracked_code,
    write_config,
)

pytestmark = pytest.mark.workflow

PAIRS = ("verbs_sports", "pronouns_verbs")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny workflow copy whose data stage has run once."""
    workdir = make_workflow_copy(tmp_path_factory.mktemp("wf"))
    snakemake(workdir, "--cores", "2", "--workflow-profile", "none")
    return workdir


def pending(workdir) -> set[str]:
    return {path for path, plan in summary_plan(workdir).items() if plan != "no update"}


def test_data_stage_writes_every_split_with_provenance(built):
    for dataset in ("gender", *PAIRS):
        for split in SPLITS:
            path = built / "results" / "data" / dataset / f"{split}.parquet"
            table = pd.read_parquet(path)
            assert len(table) > 0 and {"prompt", "target", "other"} <= set(table.columns)
            assert read_parquet_metadata(path)["versions"]["pandas"] == pd.__version__
    gender = pd.read_parquet(built / "results/data/gender/train.parquet")
    assert len(gender) == 48  # 80 % of 30 frames per category
    pair = pd.read_parquet(built / "results/data/verbs_sports/train.parquet")
    assert len(pair) == 28 and {"answer_a", "answer_b"} <= set(pair.columns)
    assert (built / "results/logs/source_table/verbs.log").read_text().count("40 rows") == 1
    assert (built / "results/benchmarks/mcmc_task/verbs_sports.tsv").exists()


def test_rerun_without_changes_schedules_nothing(built):
    out = snakemake(built, "-n", "--workflow-profile", "none")
    assert "Nothing to be done" in out.stdout + out.stderr
    assert pending(built) == set()


def test_changing_a_frame_task_param_reruns_only_that_task(built):
    config = copy.deepcopy(TINY_CONFIG)
    config["frame_tasks"]["gender"]["seed"] = 7
    write_config(built, config)
    try:
        stale = pending(built)
    finally:
        write_config(built, TINY_CONFIG)
    assert stale == {f"results/data/gender/{s}.parquet" for s in SPLITS}


def test_changing_mcmc_split_params_reruns_only_mcmc_pairs(built):
    config = copy.deepcopy(TINY_CONFIG)
    config["mcmc"]["splits"] = {"train_fraction": 0.6}
    write_config(built, config)
    try:
        stale = pending(built)
    finally:
        write_config(built, TINY_CONFIG)
    assert stale == {f"results/data/{p}/{s}.parquet" for p in PAIRS for s in SPLITS}


def test_changing_one_source_reruns_it_and_only_the_pairs_that_use_it(built):
    config = copy.deepcopy(TINY_CONFIG)
    config["sources"]["sports"]["file"] = "sports_v2"
    (built / "data/tiny/sports.csv").rename(built / "data/tiny/sports_v2.csv")
    write_config(built, config)
    try:
        stale = pending(built)
    finally:
        (built / "data/tiny/sports_v2.csv").rename(built / "data/tiny/sports.csv")
        write_config(built, TINY_CONFIG)
    assert stale == {"results/data/sources/sports.parquet"} | {
        f"results/data/verbs_sports/{s}.parquet" for s in SPLITS
    }
    assert pending(built) == set()


def test_rerun_one_stage_with_until(built):
    out = snakemake(built, "-n", "-R", "frame_task", "--until", "frame_task", "--workflow-profile", "none")
    jobs = out.stdout
    assert "frame_task" in jobs and "mcmc_task" not in jobs and "source_table" not in jobs


def test_bad_input_fails_with_a_clear_message_and_keeps_other_results(tmp_path):
    workdir = make_workflow_copy(tmp_path)
    (workdir / "data/tiny/sports.csv").write_text("question,correct\nq,a\n")
    result = snakemake(workdir, "--cores", "1", "--keep-going", "--workflow-profile", "none", check=False)
    assert result.returncode != 0
    log = (workdir / "results/logs/source_table/sports.log").read_text()
    assert "missing column(s) ['incorrect']" in log and "Traceback" not in log
    assert not (workdir / "results/data/sources/sports.parquet").exists()
    assert (workdir / "results/data/gender/train.parquet").exists()


def test_bad_config_names_the_key(tmp_path):
    workdir = make_workflow_copy(tmp_path)
    config = copy.deepcopy(TINY_CONFIG)
    config["mcmc"]["splits"] = {"max_exampels": 10}
    write_config(workdir, config)
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    assert "'max_exampels' was unexpected) at key 'mcmc.splits'" in result.stdout + result.stderr


def test_default_config_dry_runs(tmp_path):
    workdir = make_workflow_copy(tmp_path, yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    default = snakemake(workdir, "-n", "--workflow-profile", "none")
    counts = {line.split()[0]: int(line.split()[1]) for line in default.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert {k: counts.get(k) for k in ("source_table", "frame_task", "mcmc_task")} == {
        "source_table": 5, "frame_task": 1, "mcmc_task": 12}
    # The SAE path at the five configured layers, and no PCA stage: no default condition reads it.
    assert counts["provision_sae"] == 5 and counts["sae_attribution"] == 1 and counts["sae_dashboard"] == 1
    assert "pca_windows" not in counts and "pca_moments" not in counts
    # none, skyline, sae/manual, sae/random-pool x 3 seeds; attribution reads the none seed-0 run, not a 13th.
    assert counts["finetune"] == 12


@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "gemma2-config-cached"])
def test_paper_config_dry_runs_after_the_default(tmp_path, cached):
    """As a user would: `make run` has left the embedded model's checkpoint (18 layers) in
    results/models/base; Gemma 2 2B (26 layers) is not downloaded, or only its config.json is cached."""
    workdir = make_workflow_copy(tmp_path / "work", yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    leave_embedded_checkpoint(workdir)
    env = offline_hf_env(tmp_path / "hf", with_gemma2_config=cached)
    out = snakemake(workdir, "-n", "--configfile", "config/paper.yaml", "--workflow-profile", "none", env=env)
    deferred = "layer indices not checked at parse time: the shape of google/gemma-2-2b is not known"
    assert (deferred in out.stdout + out.stderr) is not cached
    assert re.search(r"^provision_sae\s+26$", out.stdout, re.MULTILINE)  # Gemma Scope at all 26 layers


def test_a_wrong_layer_for_a_cached_model_fails_at_parse_time(tmp_path):
    workdir = make_workflow_copy(tmp_path / "work", yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    leave_embedded_checkpoint(workdir)
    (workdir / "config/wrong_layer.yaml").write_text("saes:\n  layers: [25, 26]\n")
    env = offline_hf_env(tmp_path / "hf", with_gemma2_config=True)
    result = snakemake(workdir, "-n", "--configfile", "config/paper.yaml", "config/wrong_layer.yaml",
                       "--workflow-profile", "none", env=env, check=False)
    assert result.returncode != 0
    assert ("key 'saes.layers': layer(s) [26] out of range: the base model (google/gemma-2-2b) has 26 decoder "
            "layers (valid indices 0..25)") in result.stdout + result.stderr


POOL_MANUAL = "pca:\n  layers:\n    2: [0, 3]\n    5: [1]\nsae:\n  layers:\n    4: [7]\n    6: [2, 9]\n"


def test_pool_random_conditions_resolve_to_jobs_and_draw_the_manual_total(tmp_path):
    """`pca/random-pool` and `sae/random-pool` (beside the layer-matched `pca/random`) resolve to selections,
    specs, runs and evaluations per seed; their selection jobs, run on planted candidate tables, draw the
    manual selection's total count (3 for both methods) from the pooled candidates."""
    config = copy.deepcopy(TINY_CONFIG)
    config["runs"] = {"tasks": ["gender"], "seeds": [0, 1], "test_only": False,
                      "conditions": ["none", "pca/random", "pca/random-pool", "sae/random-pool",
                                     "sae-latent/random-pool"]}
    config["saes"] = {"layers": [4, 6]}
    workdir = make_workflow_copy(tmp_path, config)
    (workdir / "config/selections/gender.yaml").write_text(POOL_MANUAL)
    leave_embedded_checkpoint(workdir)  # 18 layers
    out = snakemake(workdir, "-n", "--workflow-profile", "none").stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if re.fullmatch(r"[a-z_]+\s+[0-9]+", line.strip())}
    # pca: random and random-pool per seed; sae: random-pool per seed. No manual selection job: no run uses
    # one (the file lists ids, whose counts are the baselines' parameters), so the dashboards badge none
    assert (counts["select_pca"], counts["select_sae"], counts["pca_spec"], counts["sae_spec"]) == (4, 2, 4, 4)
    assert "selections/pca/manual.json" not in out and "selections/sae/manual.json" not in out
    assert counts["finetune"] == 10 and counts["evaluate"] == 10
    methods = ("pca", "sae", "sae-latent")
    for seed in (0, 1):
        for path in (f"selections/pca/random-pool/seed{seed}.json", f"selections/pca/random/seed{seed}.json",
                     f"selections/sae/random-pool/seed{seed}.json",
                     *(f"interventions/{m}/random-pool/seed{seed}.safetensors" for m in methods),
                     *(f"eval/{m}/random-pool/seed{seed}/trained/metrics.parquet" for m in methods)):
            assert f"results/gender/{path}" in out, path
    # the dashboards badge the first seed's draw
    assert "results/gender/selections/sae/random-pool/seed0.json" in out.split("rule sae_dashboard:")[1].split("\n")[1]
    assert "wildcards: task=gender, variant=random-pool/seed1" in out

    (workdir / "results/gender/pca").mkdir(parents=True)
    pd.DataFrame({"layer": np.repeat(np.arange(18), 20), "component": np.tile(np.arange(20), 18)}).to_parquet(
        workdir / "results/gender/pca/components.parquet")
    scores = pd.DataFrame({"layer": np.repeat([4, 6], 64), "latent": np.tile(np.arange(64), 2)})
    scores["effect"] = np.random.default_rng(0).normal(size=len(scores))
    scores = rank_scores(scores, top_n=100)
    (workdir / "results/gender/sae").mkdir(parents=True)
    scores.to_parquet(workdir / "results/gender/sae/scores.parquet")
    targets = [f"results/gender/selections/{m}/random-pool/seed0.json" for m in ("pca", "sae")]
    snakemake(workdir, "--cores", "1", "--workflow-profile", "none", "--allowed-rules", "select_pca", "select_sae",
              "--", *targets)
    pca, sae = (json.loads((workdir / target).read_text()) for target in targets)
    top = set(zip(scores.loc[scores["top"], "layer"], scores.loc[scores["top"], "latent"]))
    assert sum(map(len, pca["layers"].values())) == 3 and pca["provenance"]["pool_size"] == 18 * 20
    assert sum(map(len, sae["layers"].values())) == 3 and sae["provenance"]["pool_size"] == 100
    assert {(int(layer), i) for layer, ids in sae["layers"].items() for i in ids} <= top
    assert (pca["selector"], pca["seed"], sae["selector"], sae["seed"]) == ("random-pool", 0, "random-pool", 0)


RULE_MANUAL = "sae:\n  rule: {peak_tokens: [he, she], min_windows: 2, of_top: 3, ends: [positive]}\n"


def test_a_rule_selection_reads_the_windows_and_its_random_baseline_matches_its_count(tmp_path):
    """A selection file holding a rule: the manual job reads the SAE windows and chooses the latents whose
    top windows peak on the rule's tokens; random-pool reads the manual artifact and draws as many."""
    config = copy.deepcopy(TINY_CONFIG)
    config["runs"] = {"tasks": ["gender"], "seeds": [0, 1], "test_only": False,
                      "conditions": ["none", "sae/manual", "sae/random-pool"]}
    config["saes"] = {"layers": [4, 6]}
    workdir = make_workflow_copy(tmp_path, config)
    (workdir / "config/selections/gender.yaml").write_text(RULE_MANUAL)
    leave_embedded_checkpoint(workdir)  # 18 layers
    out = snakemake(workdir, "-n", "--workflow-profile", "none").stdout
    manual_job = out.split("wildcards: task=gender, variant=manual")[0].rsplit("rule select_sae:", 1)[1]
    assert "results/gender/sae/windows.parquet" in manual_job
    pool_job = out.split("wildcards: task=gender, variant=random-pool/seed1")[0].rsplit("rule select_sae:", 1)[1]
    assert "results/gender/selections/sae/manual.json" in pool_job

    scores = pd.DataFrame({"layer": np.repeat([4, 6], 64), "latent": np.tile(np.arange(64), 2)})
    scores["effect"] = np.random.default_rng(0).normal(size=len(scores))
    scores = rank_scores(scores, top_n=100)
    (workdir / "results/gender/sae").mkdir(parents=True)
    scores.to_parquet(workdir / "results/gender/sae/scores.parquet")
    top = scores[scores["top"]].sort_values(["layer", "latent"])
    peaks = {0: ["he", "she", "the"], 1: ["he", "a", "of"], 2: ["she", "she", "she"], 3: ["He", "She", "he"]}
    rows = []
    for n, (layer, latent) in enumerate(zip(top["layer"][:4], top["latent"][:4])):
        for rank, token in enumerate(peaks[n]):
            rows.append({"layer": layer, "latent": latent, "sign": "positive", "rank": rank,
                         "tokens": [" x", f" {token}"], "values": [0.0, 1.0], "peak": 1.0})
    pd.DataFrame(rows).to_parquet(workdir / "results/gender/sae/windows.parquet")
    targets = [f"results/gender/selections/sae/random-pool/seed{seed}.json" for seed in (0, 1)]
    snakemake(workdir, "--cores", "1", "--workflow-profile", "none", "--allowed-rules", "select_sae", "--", *targets)
    manual = json.loads((workdir / "results/gender/selections/sae/manual.json").read_text())
    chosen = [(int(top["layer"].iloc[n]), int(top["latent"].iloc[n])) for n in (0, 2)]
    assert {(int(layer), i) for layer, ids in manual["layers"].items() for i in ids} == set(chosen)
    assert manual["provenance"]["rule"]["peak_tokens"] == ["he", "she"]
    pool = set(zip(top["layer"], top["latent"]))
    for target in targets:
        drawn = json.loads((workdir / target).read_text())
        assert sum(map(len, drawn["layers"].values())) == 2
        assert {(int(layer), i) for layer, ids in drawn["layers"].items() for i in ids} <= pool
        assert drawn["provenance"]["count_from"] == "results/gender/selections/sae/manual.json"


def test_lint_is_clean():
    out = snakemake(ROOT, "--lint", "--workflow-profile", "none")
    assert "Congratulations" in out.stdout + out.stderr


def test_snakefmt_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_job_ran_only_code_its_rule_tracks(built):
    """The package files each job of the data stage executed are all inputs of its rule (`library_code`)."""
    assert untracked_code(built) == {}
