"""Float32 vs bf16 autocast fine-tuning, side by side: seconds, final loss, validation and OOD accuracy.

Usage (after `make run` has built results/models/base and the gender splits):

    .venv/bin/python benchmarks/precision_accuracy.py [--train-fraction 0.25] [--epochs 3]

Both runs use the default recipe of config/config.yaml except for `precision`, the same seed and
the same example order, so the only difference is the arithmetic.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from caft.finetune.evaluation import predict, summarize
from caft.finetune.training import TrainConfig, train
from caft.model.loading import ModelSpec, load_model

BASE = Path("results/models/base")
DATA = Path("results/data/gender")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    section = yaml.safe_load(Path("config/config.yaml").read_text())["finetune"]
    section = {**section, "train_fraction": args.train_fraction, "epochs": {"frames": args.epochs}}
    train_split = pd.read_parquet(DATA / "train.parquet")
    print(f"gender, {args.train_fraction:.0%} of {len(train_split)} training examples, {args.epochs} epochs, "
          f"seed {args.seed}")
    print("precision      seconds  final loss  val acc  OOD acc  OOD logit diff")
    for precision in ("float32", "bf16-autocast"):
        cfg = TrainConfig.from_config({**section, "precision": precision}, "frames")
        model, tokenizer = load_model(ModelSpec(name=str(BASE)))
        start = time.perf_counter()
        model, history = train(model, tokenizer, train_split, cfg, args.seed)
        seconds = time.perf_counter() - start
        scores = {split: summarize(predict(model, tokenizer, pd.read_parquet(DATA / f"{split}.parquet"), "target"))
                  for split in ("val", "ood")}
        print(f"{precision:14s} {seconds:7.0f}  {history[-1]['loss']:10.4f}  {scores['val']['acc_full']:7.3f}  "
              f"{scores['ood']['acc_full']:7.3f}  {scores['ood']['logit_diff']:14.2f}")


if __name__ == "__main__":
    main()
