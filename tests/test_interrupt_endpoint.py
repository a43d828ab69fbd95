"""An `em_judge` job against an OpenAI-compatible endpoint, killed hard mid-way through real Snakemake
(SIGKILL to Snakemake and its job) and rerun: the rerun asks the server for no request the killed job
had finished, and the judged tables equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from caft.interpret.record import ResultRecord, record_path, request_key
from tests.fake_openai import TINY_BACKOFF, FakeServer
from tests.test_em_workflow import em_config
from tests.test_endpoint_faults import answer
from tests.workflow_helpers import make_workflow_copy, snakemake

import pytest

pytestmark = pytest.mark.workflow

RUN = "results/em/tiny/runs/none/none/seed0"
ROWS = 300
ARGS = ("--cores", "1", "--workflow-profile", "none")


def judge_workflow(target: Path, model_dir: Path, url: str) -> Path:
    config = em_config(model_dir, model_dir)
    config["em"]["runs"]["conditions"] = ["none"]
    judge = {"kind": "openai", "base_url": url, "model": "judge", "timeout": 5, "max_concurrency": 4, **TINY_BACKOFF}
    config["em"]["judges"] = {"aligned": judge, "coherent": judge, "vulnerable": {"kind": "bandit"}}
    workdir = make_workflow_copy(target, config)
    run = workdir / RUN
    run.mkdir(parents=True)
    # what em_sample would have written: the job's inputs, so em_judge is the only job
    pd.DataFrame({"prompt": [f"question {i % 8}" for i in range(ROWS)],
                  "answer": [f"answer number {i}" for i in range(ROWS)]}).to_parquet(run / "answers.parquet")
    pd.DataFrame({"prompt": ["Write code."], "answer": ["```python\nimport os\nos.system(input())\n```"]}).to_parquet(
        run / "code_answers.parquet")
    return workdir


def test_killed_judge_job_resumes_without_repeating_a_finished_request(tmp_path, tiny_model_dir,
                                                                      server: FakeServer) -> None:
    server.answer, server.latency = answer, 0.02
    target = f"{RUN}/judged_answers.parquet"
    reference = judge_workflow(tmp_path / "reference", tiny_model_dir, server.url)
    snakemake(reference, *ARGS, target)
    assert len(server.log) == 2 * ROWS
    server.log.clear()
    server.requests.clear()

    killed = judge_workflow(tmp_path / "killed", tiny_model_dir, server.url)
    record = record_path(killed / target)
    job = subprocess.Popen([sys.executable, "-m", "snakemake", *ARGS, target], cwd=killed,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while (not record.exists() or record.read_text().count("\n") < ROWS // 2) and job.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    kept = ResultRecord(record).keys()  # what the killed job had finished
    assert ROWS // 2 <= len(kept) < 2 * ROWS and not (killed / target).exists()

    snakemake(killed, "--unlock", "--workflow-profile", "none")
    server.requests.clear()
    snakemake(killed, *ARGS, "--rerun-incomplete", target)

    url = f"{server.url}/chat/completions"
    rerun = [request_key({"url": url, "body": body}) for _, _, body in server.requests]
    assert not set(rerun) & kept, "the rerun asked again for requests the killed job had finished"
    assert len(rerun) == 2 * ROWS - len(kept)
    for name in ("judged_answers.parquet", "judged_code_answers.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(killed / RUN / name), pd.read_parquet(reference / RUN / name))
    assert not record.exists()  # removed once both tables were written
