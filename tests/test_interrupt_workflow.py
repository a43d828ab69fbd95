"""A fine-tuning job killed hard (SIGKILL to Snakemake and its job): the lock it leaves, `--unlock`, and
the rerun that resumes from the last finished epoch to the same checkpoint as an uninterrupted run."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.workflow_helpers import TINY_CONFIG, make_workflow_copy, snakemake

pytestmark = pytest.mark.workflow

EPOCHS = 24
RUN = "results/gender/runs/none/none/seed0"


def interrupt_config(model_dir: Path) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["model"] = {"name": str(model_dir)}
    config["mcmc"] = {"triples": []}
    config["runs"] = {"tasks": ["gender"], "seeds": [0], "conditions": ["none"]}
    config["finetune"] = {"lr": 1e-3, "batch_size": 8, "epochs": {"frames": EPOCHS, "mcmc": 1}, "warmup_ratio": 0.1}
    return config


def epochs_done(workdir: Path) -> int:
    state = workdir / RUN / "model.resume" / "state.json"
    try:
        return json.loads(state.read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0


def test_killed_run_needs_unlock_then_resumes_to_the_uninterrupted_checkpoint(tmp_path, tiny_model_dir):
    config = interrupt_config(tiny_model_dir)
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    reference = make_workflow_copy(tmp_path / "reference", config)
    # the uninterrupted run goes on beside the killed one (one core each)
    uninterrupted = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--workflow-profile", "none", f"{RUN}/model"],
        cwd=reference, stdout=(tmp_path / "reference.log").open("w"), stderr=subprocess.STDOUT,
    )

    killed = make_workflow_copy(tmp_path / "killed", config)
    job = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--workflow-profile", "none", f"{RUN}/model"],
        cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while epochs_done(killed) < 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.poll() is None, "the run ended before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    stopped_after = epochs_done(killed)
    assert 2 <= stopped_after < EPOCHS and not (killed / RUN / "model").exists()

    locked = snakemake(killed, "--cores", "1", "--workflow-profile", "none", f"{RUN}/model", check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    snakemake(killed, "--unlock", "--workflow-profile", "none")
    snakemake(killed, "--cores", "1", "--workflow-profile", "none", "--rerun-incomplete", f"{RUN}/model")

    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()
    log = (killed / "results/logs/finetune/gender/none/none/seed0.log").read_text()
    assert stopped_after <= epochs_done_logged(log) < EPOCHS
    ours, theirs = (load_file(w / RUN / "model" / "model.safetensors") for w in (killed, reference))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (killed / RUN / "train_log.jsonl").read_text().count("\n") == (
        reference / RUN / "train_log.jsonl"
    ).read_text().count("\n")


def epochs_done_logged(log: str) -> int:
    line = next(line for line in log.splitlines() if "resuming from" in line)
    return int(line.rsplit("after epoch ", 1)[1].split()[0])
