"""Evaluation in float32 vs bf16 autocast, side by side: seconds, accuracy, and agreement of the predictions.

Usage (after a run exists, e.g. the survey's or the default's no-intervention run of a task):

    .venv/bin/python benchmarks/evaluation_precision.py --model results/verbs_sentiment/runs/none/none/seed0/model \
        --data results/data/verbs_sentiment [--answer answer_a] [--repeats 2]

Both precisions score the same checkpoint on D_val and D_OOD, alternating, so that load from other
processes hits both alike. Training costs are in the finetune benchmarks: the ratio printed at the end
is evaluation seconds per example over training seconds per example of the run's own `run.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from caft.finetune.evaluation import predict, summarize
from caft.model.loading import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--answer", default="answer_a")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_checkpoint(args.model)
    tables = {split: pd.read_parquet(args.data / f"{split}.parquet") for split in ("val", "ood")}
    examples = sum(len(t) for t in tables.values())
    seconds: dict[str, list[float]] = {"float32": [], "bf16-autocast": []}
    results: dict[str, dict[str, pd.DataFrame]] = {}
    for _ in range(args.repeats):
        for precision in seconds:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
                results[precision] = {split: predict(model, tokenizer, table, args.answer, args.batch_size)
                                      for split, table in tables.items()}
            seconds[precision].append(time.perf_counter() - start)
    run = json.loads((args.model.parent / "run.json").read_text())
    train_per_example = run["seconds"] / (run["steps"] * run["finetune"]["batch_size"])
    for precision, times in seconds.items():
        best = min(times)
        accuracy = {split: round(summarize(r)["acc_2way"], 4) for split, r in results[precision].items()}
        print(json.dumps({"precision": precision, "seconds": [round(t, 1) for t in times], "examples": examples,
                          "s_per_example": round(best / examples, 4),
                          "eval_over_train_per_example": round(best / examples / train_per_example, 3),
                          "acc_2way": accuracy}))
    agree = np.mean([(results["float32"][s]["pred_2way"] == results["bf16-autocast"][s]["pred_2way"]).mean()
                     for s in tables])
    diff = max(float(np.abs(results["float32"][s]["logit_diff"] - results["bf16-autocast"][s]["logit_diff"]).max())
               for s in tables)
    print(json.dumps({"speedup_bf16": round(min(seconds["float32"]) / min(seconds["bf16-autocast"]), 2),
                      "prediction_agreement": round(float(agree), 4), "max_abs_logit_diff_change": round(diff, 3)}))


if __name__ == "__main__":
    main()
