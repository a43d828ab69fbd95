"""profiles/slurm on a real SLURM cluster: the one-node cluster of tests/slurm_cluster/cluster.sh (root
only; skipped where it cannot start), or with CAFT_SLURM_CLUSTER=existing the cluster `sinfo` talks to.
Everything is checked against SLURM's own records (sacct, scontrol show job), not Snakemake's word:
each job is a SLURM job of its rule with the rule's threads, memory and time; a failing job is FAILED,
retried with doubled memory and its log shown; a rerun submits only the missing jobs; a job cancelled
with scancel ends the run instead of leaving Snakemake waiting. Every call runs under `timeout -k`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import yaml

from tests.test_slurm import RESOURCES
from tests.workflow_helpers import ROOT, make_workflow_copy

pytestmark = pytest.mark.workflow

pytest.importorskip("snakemake_executor_plugin_slurm")

CLUSTER_SH = ROOT / "tests" / "slurm_cluster" / "cluster.sh"
EXISTING = os.environ.get("CAFT_SLURM_CLUSTER") == "existing"
RUN_TIMEOUT = int(os.environ.get("CAFT_SLURM_TIMEOUT", "300"))
"""Seconds one Snakemake run may take, queue waits included (raise it on a busy cluster)."""
CANCEL_TIMEOUT = 120  # the cancelled run's jobs are held in the queue: no wait for a free node
LOCAL = {"slurm_account": "caft", "slurm_partition": "debug"}  # what cluster.sh sets up
THREADS = {"frame_task": 2}  # set-threads in the profile copy: one rule whose job needs two CPUs

# Three sources, the gender frame task and one MCMC task: five jobs of the three data-stage rules.
CONFIG = {
    "model": {"name": "embedded"},
    "sources": {name: {"from": "local", "path": "data/tiny"} for name in ("gender", "verbs", "sports")},
    "frame_tasks": {"gender": {"source": "gender"}},
    "mcmc": {"triples": [["verbs", "sports", 0]]},
}
ALL_JOBS = {("source_table", "gender"), ("source_table", "verbs"), ("source_table", "sports"),
            ("frame_task", "gender"), ("mcmc_task", "verbs_sports")}
BROKEN = ("source_table", "sports")  # the job the first run breaks


def timed(command: list[str], seconds: int) -> list[str]:
    """`command` under coreutils timeout, KILLed 10 s after its TERM: nothing here can hang CI."""
    return ["timeout", "-k", "10", str(seconds), *command]


def slurm(*command: str) -> str:
    """The output of a SLURM command (sacct, squeue, scontrol, scancel, sinfo), which must succeed."""
    return subprocess.run(timed(list(command), 60), capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL).stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A running cluster: the existing one, or cluster.sh's (brought down afterwards if this started it)."""
    if EXISTING:
        slurm("sinfo")
        yield
        return
    was_up = subprocess.run(timed([str(CLUSTER_SH), "status"], 30), capture_output=True).returncode == 0
    up = subprocess.run(timed([str(CLUSTER_SH), "up"], 180), capture_output=True, text=True,
                        stdin=subprocess.DEVNULL)
    if up.returncode == 2:
        pytest.skip(f"no local SLURM cluster: {up.stderr.strip()}")
    assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
    print(up.stdout.strip())
    yield
    if not was_up:
        subprocess.run(timed([str(CLUSTER_SH), "down"], 120), check=True, stdin=subprocess.DEVNULL)


@dataclass
class Run:
    """One Snakemake run on the cluster and SLURM's records of its jobs."""

    returncode: int
    output: str
    run_id: str  # the plugin's SLURM job name for every job of the run
    jobs: list[dict[str, str]]  # sacct's fields and a few of scontrol's, in submission order
    seconds: float


def sacct_jobs(run_id: str) -> list[dict[str, str]]:
    """The run's jobs from sacct (accounting), each with its rule comment from `scontrol show job`."""
    fields = ["JobIDRaw", "State", "ReqCPUS", "AllocCPUS", "ReqMem", "Timelimit", "Account", "Partition",
              "Submit", "Start", "End"]
    # Every state named, with an end time: otherwise sacct leaves out a job cancelled before it was eligible.
    out = slurm("sacct", "-X", "--parsable2", "--noheader", "--starttime", "now-6hours", "--endtime", "now",
                "--state", "BF,CA,CD,DL,F,NF,OOM,PD,PR,R,RQ,RS,RV,S,TO", "--name", run_id,
                f"--format={','.join(fields)}")
    jobs = [dict(zip(fields, line.split("|"))) for line in out.splitlines()]
    for job in jobs:
        record = dict(re.findall(r"(\w+)=(\S*)", slurm("scontrol", "show", "job", "-o", job["JobIDRaw"])))
        job.update({f"scontrol {name}": record[name] for name in ("Comment", "NumCPUs", "MinMemoryNode", "TimeLimit")})
        comment = re.fullmatch(r"rule_(\w+?)(?:_wildcards_(\w+))?", job["scontrol Comment"])
        assert comment, f"job {job['JobIDRaw']} has no rule comment: {record}"
        job["rule"], job["wildcards"] = comment[1], comment[2] or ""
    return sorted(jobs, key=lambda job: int(job["JobIDRaw"]))


def start(workdir: Path, *args: str, timeout: int = RUN_TIMEOUT) -> tuple[subprocess.Popen, Path]:
    """Snakemake on the SLURM profile in the background, its output to a file; job states are polled from
    the first second on (the plugin's default is 40 s)."""
    command = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm",
               "--slurm-init-seconds-before-status-checks", "1", *args]
    log = workdir / f"snakemake-{time.time_ns()}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(timed(command, timeout), cwd=workdir, stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return process, log


def run_id_in(output: str) -> str | None:
    found = re.search(r"SLURM run ID: (\S+)", output)
    return found[1] if found else None


def finish(process: subprocess.Popen, log: Path, started: float) -> Run:
    """Wait for the run; a run that hit its timeout fails the test, after its jobs are cancelled."""
    returncode = process.wait()
    output = log.read_text()
    run_id = run_id_in(output)
    if returncode in (124, 137):
        if run_id:
            slurm("scancel", "--name", run_id)
        pytest.fail(f"Snakemake ran into its timeout and was killed:\n{output}")
    assert run_id, f"no SLURM run ID in the output:\n{output}"
    return Run(returncode, output, run_id, sacct_jobs(run_id), time.monotonic() - started)


def snakemake(workdir: Path, *args: str) -> Run:
    started = time.monotonic()
    return finish(*start(workdir, *args), started)


def slurm_time(minutes: int) -> str:
    """A time limit as sacct and scontrol print it (under a day)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> tuple[Path, Run, Run]:
    """A first run with one source broken (--keep-going, so every other job runs), then, with the source
    repaired, the rerun."""
    workdir = make_workflow_copy(tmp_path_factory.mktemp("slurm_cluster"), CONFIG)
    profile = workdir / "profiles" / "slurm" / "config.yaml"
    settings = yaml.safe_load(profile.read_text())
    if not EXISTING:
        settings["default-resources"].update(LOCAL)
    settings["set-threads"] = THREADS
    profile.write_text(yaml.safe_dump(settings, sort_keys=False))

    sports = workdir / "data" / "tiny" / "sports.csv"
    good = sports.read_text()
    sports.write_text(pd.read_csv(sports).drop(columns="incorrect").to_csv(index=False))
    first = snakemake(workdir, "--keep-going")
    sports.write_text(good)
    rerun = snakemake(workdir)
    for run in (first, rerun):
        print_timings(workdir, run)
    return workdir, first, rerun


def print_timings(workdir: Path, run: Run) -> None:
    """Per job: time in the queue, time in its allocation, and the rule's own time (its benchmark file);
    the difference is the job's start-up on the node (a Snakemake parse of the workflow)."""
    print(f"run {run.run_id}: {run.seconds:.0f} s, {len(run.jobs)} SLURM jobs")
    for job in run.jobs:
        line = (f"  {job['JobIDRaw']} {job['rule']} {job['wildcards']} {job['State']}: queued "
                f"{seconds_between(job['Submit'], job['Start']):.0f} s, allocated "
                f"{seconds_between(job['Start'], job['End']):.0f} s")
        benchmark = workdir / "results/benchmarks" / job["rule"] / f"{job['wildcards']}.tsv"
        if job["State"] == "COMPLETED" and benchmark.is_file():
            line += f", rule {pd.read_csv(benchmark, sep=chr(9))['s'].iloc[0]:.1f} s"
        print(line)


def key(job: dict[str, str]) -> tuple[str, str]:
    return job["rule"], job["wildcards"]


def test_every_job_is_a_slurm_job_with_its_rules_resources(runs):
    workdir, first, rerun = runs
    settings = yaml.safe_load((workdir / "profiles/slurm/config.yaml").read_text())["default-resources"]
    jobs = first.jobs + rerun.jobs
    assert {key(job) for job in jobs} == ALL_JOBS  # every job of the workflow went through SLURM
    for run in (first, rerun):
        attempts: Counter = Counter()
        for job in run.jobs:
            attempts[key(job)] += 1
            threads = THREADS.get(job["rule"], 1)
            mem_mb = RESOURCES[job["rule"]][0] * attempts[key(job)]  # memory doubles on the retry
            runtime = slurm_time(RESOURCES[job["rule"]][1])
            assert (job["ReqCPUS"], job["scontrol NumCPUs"]) == (str(threads), str(threads)), job
            assert int(job["AllocCPUS"]) >= threads, job
            assert (job["ReqMem"], job["scontrol MinMemoryNode"]) == (f"{mem_mb}M", f"{mem_mb}M"), job
            assert (job["Timelimit"], job["scontrol TimeLimit"]) == (runtime, runtime), job
            for resource, field in (("slurm_account", "Account"), ("slurm_partition", "Partition")):
                if resource in settings:
                    assert job[field] == settings[resource], job


def test_a_failing_job_is_failed_in_slurm_retried_once_and_its_log_shown(runs):
    _, first, _ = runs
    assert first.returncode == 1
    states = {}
    for job in first.jobs:
        states.setdefault(key(job), []).append(job["State"])
    # retries: 1 in the profile: the broken job ran twice, the others once; the MCMC task that needs it
    # never ran.
    assert states == {BROKEN: ["FAILED", "FAILED"], ("source_table", "gender"): ["COMPLETED"],
                      ("source_table", "verbs"): ["COMPLETED"], ("frame_task", "gender"): ["COMPLETED"]}
    failed = [job["JobIDRaw"] for job in first.jobs if key(job) == BROKEN]
    for job_id in failed:
        assert f"SLURM-job '{job_id}' failed, SLURM status is: 'FAILED'" in first.output
    # show-failed-logs: the rule's own log, with the stage's error, ends the output.
    assert "Logfile results/logs/source_table/sports.log:" in first.output
    assert "missing column(s) ['incorrect']" in first.output


def test_a_rerun_after_a_failure_submits_only_the_missing_jobs(runs):
    workdir, first, rerun = runs
    completed = {key(job) for job in first.jobs if job["State"] == "COMPLETED"}
    assert rerun.returncode == 0, rerun.output
    assert {key(job) for job in rerun.jobs} == ALL_JOBS - completed
    assert [key(job) for job in rerun.jobs] == [BROKEN, ("mcmc_task", "verbs_sports")]  # each once
    assert {job["State"] for job in rerun.jobs} == {"COMPLETED"}
    for split in ("train", "val", "ood"):
        assert (workdir / "results/data/verbs_sports" / f"{split}.parquet").is_file()


def test_a_job_cancelled_with_scancel_ends_the_run(runs):
    """A job held in the queue (sbatch --hold) is cancelled from outside; so is its resubmission
    (retries: 1), and Snakemake then stops with SLURM's state instead of waiting forever."""
    workdir, _, _ = runs
    started = time.monotonic()
    process, log = start(workdir, "--forcerun", "frame_task", "--set-resources", "frame_task:slurm_extra='--hold'",
                         timeout=CANCEL_TIMEOUT)
    cancelled: list[str] = []
    while process.poll() is None:
        run_id = run_id_in(log.read_text())
        if run_id:
            for job_id in slurm("squeue", "--noheader", "--states=PENDING", "--format=%i", "--name", run_id).split():
                slurm("scancel", job_id)
                cancelled.append(job_id)
        time.sleep(1)
    run = finish(process, log, started)
    print(f"cancel run {run.run_id}: {run.seconds:.0f} s, cancelled {cancelled}")
    assert run.returncode == 1
    assert [job["JobIDRaw"] for job in run.jobs] == cancelled and len(cancelled) == 2
    for job in run.jobs:
        assert key(job) == ("frame_task", "gender")
        # What sacct says (the plugin's sacct status path does not recognise it); squeue says CANCELLED.
        assert job["State"] == f"CANCELLED by {os.getuid()}"
        assert f"SLURM-job '{job['JobIDRaw']}' failed, SLURM status is: 'CANCELLED'" in run.output
