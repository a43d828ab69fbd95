"""Config keys that change no result stay out of the rules' params (a rerun trigger): toggling them
schedules nothing. A scratch copy of the workflow, every script replaced by a stub that only makes its
job's outputs, is built once (Snakemake records each job's params as it would for the real scripts), then
dry-run under changed configs."""

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.workflow_helpers import TINY_CONFIG, make_workflow_copy, snakemake, summary_plan, write_config

pytestmark = pytest.mark.workflow

STUB = '''"""Test stub: the job's outputs, empty (a path without a suffix is a folder)."""
from pathlib import Path

for path in map(Path, snakemake.output):
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    else:
        path.mkdir(parents=True, exist_ok=True)
'''

def endpoint(kind: str) -> dict:
    return {kind: "openai", "base_url": "http://127.0.0.1:9", "model": "judge"}


def params_config() -> dict:
    """Both halves on a tiny config, so every rule whose params leave a key out has jobs: fine-tunes of
    a frame task and an MCMC pair, explanations by an endpoint, pretrained SAEs (with `train` settings
    they ignore) for the main and the EM chain, and endpoint judges."""
    config = copy.deepcopy(TINY_CONFIG)
    config["runs"] = {"tasks": ["gender", "verbs_sports_1"], "seeds": [0],
                      "conditions": ["none", "pca/auto", "sae/top"]}
    config["finetune"] = {"epochs": {"frames": 1, "mcmc": 1}, "keep_checkpoints": True}
    pretrained = {"from": "pretrained", "release": "a-release", "sae_id": "layer_{layer}",
                  "train": {"lr": 1e-3}, "batch_size": 8}
    config["saes"] = {**pretrained, "layers": [1]}
    config["explanations"] = {"methods": ["pca"], "queries": {"gender": "gender", "verbs_sports_1": "sports"},
                              "client": endpoint("client"), "max_tokens": 40}
    config["em"] = {
        "models": {"tiny": {"model": {"name": "embedded"}, "layers": [0, 1]}},
        "runs": {"models": ["tiny"], "seeds": [0], "conditions": ["base", "none", "sae/top"]},
        "saes": pretrained,
        "judges": {"aligned": endpoint("kind"), "coherent": endpoint("kind"),
                   "vulnerable": {"kind": "bandit"}},
    }
    return config


def non_result_changes(config: dict) -> dict:
    """`config` with every key that changes no output changed."""
    config = copy.deepcopy(config)
    config["finetune"]["keep_checkpoints"] = False
    for section in (config["saes"], config["em"]["saes"]):  # pretrained: the train settings are unused
        section["train"] = {"lr": 5e-4, "width": 128}
        section["batch_size"] = 2
    return config


def build(workdir: Path, config: dict) -> None:
    write_config(workdir, config)
    snakemake(workdir, "--cores", "2", "--workflow-profile", "none")


def scheduled(workdir: Path, config: dict) -> set[str]:
    """The outputs a run under `config` would make, the built config restored afterwards."""
    built = (workdir / "config/config.yaml").read_text()
    write_config(workdir, config)
    try:
        return {path for path, plan in summary_plan(workdir).items() if plan != "no update"}
    finally:
        (workdir / "config/config.yaml").write_text(built)


@pytest.fixture(scope="module")
def stubbed(tmp_path_factory):
    """The copy built with token summaries, what a longer explainer reply would then schedule, and the copy
    built again (the explanations and what follows them) with the endpoint explainer of `params_config`."""
    workdir = make_workflow_copy(tmp_path_factory.mktemp("params"), params_config())
    for script in (workdir / "workflow/scripts").glob("*.py"):
        script.write_text(STUB)
    tokens = params_config()
    tokens["explanations"]["client"] = {"client": "tokens"}
    build(workdir, tokens)
    tokens["explanations"]["max_tokens"] = 80
    longer_reply = scheduled(workdir, tokens)
    build(workdir, params_config())
    return SimpleNamespace(workdir=workdir, token_summaries_longer_reply=longer_reply)


def test_keys_that_change_no_result_schedule_nothing(stubbed):
    """keep_checkpoints and the settings of an SAE source other than the configured one (main and EM
    chain): a dry run after changing them all."""
    write_config(stubbed.workdir, non_result_changes(params_config()))
    try:
        out = snakemake(stubbed.workdir, "-n", "--workflow-profile", "none")
    finally:
        write_config(stubbed.workdir, params_config())
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout


def test_token_summaries_do_not_depend_on_the_reply_length(stubbed):
    """`explanations.max_tokens` bounds an LLM's reply; token summaries write none."""
    assert stubbed.token_summaries_longer_reply == set()


def test_the_epochs_of_one_task_kind_rerun_only_its_runs(stubbed):
    """The MCMC epochs rerun the MCMC pair's fine-tunes, not the frame task's (and show that the stub
    build recorded the params)."""
    config = params_config()
    config["finetune"]["epochs"]["mcmc"] = 2
    runs = {path for path in scheduled(stubbed.workdir, config) if "/runs/" in path}
    assert runs and all(path.startswith(("results/verbs_sports/", "results/verbs_sports_1/")) for path in runs)
