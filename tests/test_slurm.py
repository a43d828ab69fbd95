"""profiles/slurm: a dry run, and the data stage through the real SLURM executor plugin against the
fake SLURM commands in tests/fake_slurm/ (they run each job locally and log its sbatch argv)."""

import os
import re
from collections import Counter

import pytest
import yaml

from caft.data.tasks import SPLITS
from tests.workflow_helpers import ROOT, make_workflow_copy, snakemake

pytestmark = pytest.mark.workflow

pytest.importorskip("snakemake_executor_plugin_slurm")

PROFILE = ("--workflow-profile", "profiles/slurm")
DEFAULTS = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())["default-resources"]
FAKE_SLURM = ROOT / "tests" / "fake_slurm"
# (mem_mb, runtime in minutes) as declared in rules/*.smk.
RESOURCES = {
    "source_table": (2000, 20), "frame_task": (2000, 10), "mcmc_task": (2000, 10), "base_model": (8000, 30),
    "random_directions": (2000, 10), "finetune": (12000, 240), "evaluate": (8000, 60), "ood_table": (2000, 10),
    "corpus_package": (1000, 10), "corpus": (8000, 120), "pca_moments": (8000, 60), "pca_components": (4000, 10), "pca_windows": (8000, 60),
    "select_pca": (2000, 10), "pca_spec": (2000, 10), "pca_dashboard": (4000, 10),
    "sae_activations": (8000, 60), "provision_sae": (8000, 120), "sae_attribution": (8000, 60),
    "sae_windows": (8000, 60), "select_sae": (2000, 10), "sae_spec": (4000, 10), "sae_dashboard": (4000, 10),
    "explain": (8000, 120), "auto_select": (2000, 10), "residual_means": (8000, 60), "steer_spec": (2000, 10),
}
GPU_RULES = {"finetune", "evaluate", "pca_moments", "pca_windows", "sae_activations", "provision_sae",
             "sae_attribution", "sae_windows", "residual_means"}
# Jobs of the tiny config in tests/workflow_helpers.py.
TINY_JOBS = {"source_table": 4, "frame_task": 1, "mcmc_task": 2}
TINY_DATASETS = ("gender", "verbs_sports", "pronouns_verbs")


def job_resources(log: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, {resource: value}) for each job of a dry run's output."""
    jobs = []
    for line in log.splitlines():
        if rule := re.fullmatch(r"rule (\w+):", line):
            name = rule[1]
        elif resources := re.fullmatch(r"\s+resources: (.*)", line):
            jobs.append((name, dict(item.split("=", 1) for item in resources[1].split(", "))))
    return jobs


def test_dry_run_in_the_repository_shows_rule_resources(tmp_path):
    # -F: list every job even when the repository's results are up to date; every kind of condition
    # and mean ablation, so that every rule has a job.
    every_rule = tmp_path / "every_rule.yaml"
    every_rule.write_text(yaml.safe_dump({
        "runs": {"tasks": ["gender"], "seeds": [0], "test_only": True,
                 "conditions": ["none", "random/random", "pca/top", "pca/random", "pca/auto", "sae/top", "sae/random",
                                "sae-latent/manual", "steer/top"]},
        "interventions": {"center": True},
        "explanations": {"methods": ["pca", "sae"]},  # the auto conditions of both methods
    }))
    result = snakemake(ROOT, "-n", "-F", *PROFILE, "--configfile", str(every_rule))
    jobs = job_resources(result.stdout)
    assert {rule for rule, _ in jobs} == {*RESOURCES, "all"}
    for rule, resources in jobs:
        # `all` declares nothing, so it shows the profile's default-resources.
        mem_mb, runtime = RESOURCES.get(rule, (DEFAULTS["mem_mb"], DEFAULTS["runtime"]))
        assert (resources["mem_mb"], resources["runtime"]) == (str(mem_mb), str(runtime)), rule
        assert (resources.get("gpu") == "1") == (rule in GPU_RULES), rule

def submissions(state_dir) -> list[list[str]]:
    """The argv of every fake sbatch call."""
    return [path.read_text().split("\0")[:-1] for path in sorted(state_dir.glob("jobs/*/argv"))]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_data_stage_runs_through_the_slurm_plugin(tmp_path):
    workdir = make_workflow_copy(tmp_path)
    state = tmp_path / "fake_slurm_state"
    env = {"PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state),
           "FAKE_SLURM_SYNC": "1"}
    # The plugin first polls 40 s after submitting; 1 s keeps the test short.
    fast_polling = ("--slurm-init-seconds-before-status-checks", "1")
    snakemake(workdir, *PROFILE, "--jobs", "4", *fast_polling, env=env)

    for dataset in TINY_DATASETS:
        for split in SPLITS:
            assert (workdir / "results/data" / dataset / f"{split}.parquet").is_file()
    for source in ("gender", "verbs", "sports", "pronouns"):
        assert (workdir / "results/data/sources" / f"{source}.parquet").is_file()

    argvs = submissions(state)
    comments = [option(argv, "--comment") for argv in argvs]  # rule_<rule>_wildcards_<values>
    rules = [re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", comment)[1] for comment in comments]
    assert Counter(rules) == TINY_JOBS  # one sbatch per job, no resubmission
    for rule, argv in zip(rules, argvs):
        mem_mb, runtime = RESOURCES[rule]
        assert (option(argv, "--mem"), option(argv, "-t")) == (str(mem_mb), str(runtime)), rule
        assert "--cpus-per-task=1" in argv  # threads: 1
        # No account or partition in the profile: guessed via sacct/sacctmgr, default from sinfo.
        assert (option(argv, "-A"), option(argv, "-p")) == ("testacct", "cpu")
