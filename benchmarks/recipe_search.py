"""One fine-tuning experiment outside the DAG: a recipe (finetune keys) and an optional intervention spec
on a task's splits, evaluated on D_val and D_OOD — for choosing the default recipe by measurement.

Usage (after `make run` has built the base model and the task's splits):

    .venv/bin/python benchmarks/recipe_search.py --name lr1e-4_ep1 --set lr=1e-4 --set epochs.frames=1 \
        [--spec results/gender/interventions/sae/manual.safetensors] [--seed 0] [--task gender]
    .venv/bin/python benchmarks/recipe_search.py --name grad --task verbs_sentiment --kind mcmc --answer answer_b \
        --spec results/verbs_sentiment_1/interventions/pca/manual.safetensors --mode gradient

Writes results/experiments/{name}/seed{seed}/ (checkpoint deleted afterwards) and prints one JSON line:
the recipe, seconds, and accuracy (2-way) per split for the deployed model (and with hooks, given a spec).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

import pandas as pd
import torch
import yaml

from caft.ablation.specs import centered, load_spec, save_spec
from caft.finetune.evaluation import EvaluationConfig
from caft.finetune.training import TrainConfig
from caft.model.loading import ModelSpec
from caft.stages.finetune import evaluate, finetune


def parse_value(text: str) -> object:
    """YAML value, except that "1e-4" (a string to YAML 1.1) is a number."""
    value = yaml.safe_load(text)
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def apply(section: dict, assignment: str) -> None:
    """``a.b=value`` sets section[a][b] (YAML-parsed value)."""
    path, _, value = assignment.partition("=")
    *parents, leaf = path.split(".")
    target = section
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = parse_value(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", action="append", default=[], help="finetune key=value (dotted keys allowed)")
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--center", action="store_true",
                        help="mean-ablate: center the spec's projection at the corpus mean residual of each layer "
                             "(results/corpus/residual_means.safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="gender", help="the data folder under results/data/")
    parser.add_argument("--kind", default="frames", choices=["frames", "mcmc"], help="which finetune.epochs applies")
    parser.add_argument("--answer", default="target",
                        help="column scored on D_val/D_OOD: target, or answer_a / answer_b for an MCMC intended index")
    parser.add_argument("--mode", default="project", help="interventions.mode: project, gradient or activation")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path("config/config.yaml").read_text())
    section = copy.deepcopy(config["finetune"])
    for assignment in args.set:
        apply(section, assignment)
    out = Path("results/experiments") / args.name / f"seed{args.seed}"
    if args.center:
        spec = centered(load_spec(args.spec), Path("results/corpus/residual_means.safetensors"))
        save_spec(spec, out / "spec.safetensors")
        args.spec = out / "spec.safetensors"
    data = Path("results/data") / args.task
    key = {"experiment": args.name}
    finetune(TrainConfig.from_config(section, args.kind), ModelSpec.from_config(config["model"]),
             Path("results/models/base"), data / "train.parquet", args.spec, args.seed, key, out / "model",
             out / "train_log.jsonl", out / "run.json", mode=args.mode)
    modes = ["deployed", "hooked"] if args.spec else ["deployed"]
    evaluate(EvaluationConfig(32, config["evaluation"]["precision"]), out / "model", config["model"]["dtype"],
             {s: data / f"{s}.parquet" for s in ("val", "ood")}, args.spec, modes, args.answer, key,
             out / "predictions.parquet", out / "metrics.parquet")
    shutil.rmtree(out / "model")
    metrics = pd.read_parquet(out / "metrics.parquet")
    run = json.loads((out / "run.json").read_text())
    accuracy = {f"{m}/{s}": round(float(a), 3) for m, s, a in zip(metrics["mode"], metrics["split"], metrics["acc_2way"])}
    print(json.dumps({"name": args.name, "seed": args.seed, "set": args.set, "spec": str(args.spec or ""),
                      "mode": args.mode,
                      "seconds": run["seconds"], "final_loss": round(run["final_loss"], 3), **accuracy}))


if __name__ == "__main__":
    main()
