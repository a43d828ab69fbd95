"""Run the real workflow in a scratch copy of the repository, on a tiny config with local sources."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from caft.job import TRACE_ENV
from caft.tracking import caft_modules_of

ROOT = Path(__file__).resolve().parents[1]
CODE_TRACE = "code_trace"
"""Where each job of a workflow test records the package files its stage ran (`caft.job.TRACE_ENV`)."""
COPIED = ("Snakefile", "rules", "workflow", "config", "profiles", "environment.yml", "pyproject.toml")

TINY_CONFIG = {
    "model": {"name": "embedded"},
    "sources": {
        "gender": {"from": "local", "path": "data/tiny"},
        "verbs": {"from": "local", "path": "data/tiny"},
        "sports": {"from": "local", "path": "data/tiny"},
        "pronouns": {"from": "local", "path": "data/tiny"},
    },
    "frame_tasks": {"gender": {"source": "gender"}},
    "mcmc": {"triples": [["verbs", "sports", 0], ["verbs", "sports", 1], ["pronouns", "verbs", 1]]},
}


def tiny_sources(directory: Path) -> None:
    """Small tables in the public schema: 30 frames per category, 40 questions per source."""
    directory.mkdir(parents=True, exist_ok=True)
    frames = [(f"The $PROFESSION$ met client {i} before $PRONOUN$ left.", "nominative") for i in range(30)]
    frames += [(f"Client {i} called the $PROFESSION$ to thank $PRONOUN$.", "object") for i in range(30)]
    pd.DataFrame(frames, columns=["text", "category"]).to_csv(directory / "gender.csv", index=False)
    for name, (yes, no) in {"verbs": ("is", "are"), "sports": ("baseball", "football"),
                            "pronouns": ("she", "him")}.items():
        pd.DataFrame({"question": [f"{name} item {i}" for i in range(40)], "correct": yes, "incorrect": no}).to_csv(
            directory / f"{name}.csv", index=False
        )


def make_workflow_copy(target: Path, config: dict | None = None) -> Path:
    """Copy the workflow into ``target`` (the package source is linked, not copied) with a tiny config."""
    target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy2(source, target / name)
    (target / "src").symlink_to(ROOT / "src")
    tiny_sources(target / "data" / "tiny")
    write_config(target, config or TINY_CONFIG)
    return target


TEST_SETTINGS: dict[str, object] = {
    "finetune.lr": 2e-5, "finetune.epochs.frames": 5, "finetune.epochs.mcmc": 4, "finetune.batch_size": 16,
    "finetune.freeze_embeddings": False, "finetune.train_fraction": 1.0, "finetune.precision": "float32",
    "interventions.center": False, "evaluation.precision": "float32", "corpus.max_tokens": None,
    "windows.random_per_component": 5, "saes.train.width": 2048, "saes.train.tokens": 200_000,
    "saes.train.lr": 3e-4, "attribution.model": "base", "attribution.validate_top": 10,
    "attribution.max_prompts": None, "attribution.validate_prompts": 128, "selection.auto.min_relevance": 0.3,
    "explanations.client": {"client": "local", "model": "embedded"}, "explanations.max_windows": 10,
    "explanations.simulate_windows": 5, "explanations.max_tokens": 60, "explanations.pca_components": 10,
    "explanations.sae_latents": 100,
}
"""What the workflow tests were written against where their configs leave a key out: the schema's defaults
before config/config.yaml's recommended values became the defaults (#25). Only keys whose default changed."""
EM_TEST_SETTINGS: dict[str, object] = {
    "em.saes.train.width": 2048, "em.saes.train.tokens": 200_000, "em.saes.train.lr": 3e-4,
    "em.sae_candidates.top_per_layer": 100, "em.sae_candidates.max_examples": 1000,
    "em.questions.samples_per_paraphrase": None, "em.finetune.lr": 1e-5, "em.finetune.weight_decay": 0.01,
    "em.finetune.batch_size": 16, "em.finetune.gradient_accumulation": 8, "em.finetune.max_tokens": 2048,
    "em.finetune.precision": "float32", "em.sampling.max_new_tokens": 128, "em.sampling.batch_size": 8,
    "em.responses.batch_size": 8,
}
"""The same for a config with an `em` section (before #25 the EM defaults were `caft.em.sft.SftConfig`'s
and `caft.em.sampling.SamplingConfig`'s)."""


def with_test_settings(config: dict) -> dict:
    """`config` with `TEST_SETTINGS` (and, with an `em` section, `EM_TEST_SETTINGS`) where it leaves them out."""
    config = copy.deepcopy(config)
    settings = dict(TEST_SETTINGS)
    if "em" in config:
        settings |= EM_TEST_SETTINGS
        em = config["em"]
        if "warmup_ratio" not in em.get("finetune", {}):
            settings["em.finetune.warmup_steps"] = 5
        if "responses" in em:  # a given section's other keys were SamplingConfig's; a missing one was greedy, 64
            settings |= {"em.responses.temperature": 1.0, "em.responses.max_new_tokens": 128}
    for path, value in settings.items():
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node.setdefault(leaf, copy.deepcopy(value))
    return config


def write_config(target: Path, config: dict) -> None:
    """Write `config` as the copy's config/config.yaml, with the settings the tests were written against."""
    (target / "config" / "config.yaml").write_text(yaml.safe_dump(with_test_settings(config), sort_keys=False))


def snakemake(workdir: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m snakemake`` in ``workdir``; output is captured and shown on failure.

    Each job is a fresh Python process that spends seconds importing torch and transformers for
    milliseconds of tiny-model work, so with several cores the jobs run one thread each, side by side
    (``--max-threads 1``), instead of one at a time on all cores.
    """
    threads = ["--max-threads", "1"] if "--cores" in args and "--max-threads" not in args else []
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *threads, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, TRACE_ENV: str(workdir / CODE_TRACE), **(env or {})},
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def summary_plan(workdir: Path) -> dict[str, str]:
    """``snakemake --summary`` as {output file: plan} ('no update' / 'update pending' / ...)."""
    out = snakemake(workdir, "--summary", "--cores", "1").stdout
    lines = [line.split("\t") for line in out.strip().splitlines()]
    header = lines[0]
    return {row[0]: row[header.index("plan")] for row in lines[1:] if len(row) == len(header)}


def reused_rules() -> dict[str, str]:
    """``use rule X as Y`` of the rule files: Y -> X (Y runs X's script)."""
    pattern = re.compile(r"^use rule (\w+) as (\w+) with:", re.MULTILINE)
    return {new: old for path in (ROOT / "rules").glob("*.smk") for old, new in pattern.findall(path.read_text())}


def untracked_code(workdir: Path) -> dict[str, list[str]]:
    """Per rule, the package files its jobs ran that the rule does not list as inputs (should be none)."""
    traces = sorted((workdir / CODE_TRACE).glob("*.txt"))
    assert traces, f"no job of {workdir} recorded the code it ran"
    missing: dict[str, list[str]] = {}
    for trace in traces:
        rule = trace.name.split(".")[0]
        script = ROOT / "workflow" / "scripts" / f"{reused_rules().get(rule, rule)}.py"
        tracked = {path.resolve() for path in caft_modules_of(script, ROOT / "src")}
        ran = {Path(line) for line in trace.read_text().split()}
        if ran - tracked:
            missing.setdefault(rule, []).extend(sorted(str(p.relative_to(ROOT)) for p in ran - tracked))
    return missing


GEMMA2_2B = "google/gemma-2-2b"


def leave_embedded_checkpoint(workdir: Path, n_layers: int = 18) -> None:
    """What `make run` leaves in `results/models/base`: the embedded Gemma 3 270M's config and provenance
    (no weights: the parse-time layer check reads only these)."""
    base = workdir / "results/models/base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "num_hidden_layers": n_layers,
                                                  "hidden_size": 640}))
    (base / "caft_provenance.json").write_text(json.dumps({"stage": "base_model",
                                                           "config": {"name": "embedded", "revision": None}}))


def offline_hf_env(home: Path, with_gemma2_config: bool) -> dict[str, str]:
    """An offline Hugging Face home at `home`, empty or holding only Gemma 2 2B's config.json (26 layers)."""
    if with_gemma2_config:
        commit = "0" * 40
        repo = home / "hub" / f"models--{GEMMA2_2B.replace('/', '--')}"
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text(json.dumps(
            {"model_type": "gemma2", "num_hidden_layers": 26, "hidden_size": 2304}))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    home.mkdir(parents=True, exist_ok=True)
    return {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}
