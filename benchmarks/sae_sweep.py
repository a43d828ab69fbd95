"""SAE quality and cost over a small grid of width, k and training tokens, on the workflow's own corpus
activations (the `sae_activations` artifact), one layer at a time.

Usage (after `snakemake results/saes/activations.safetensors`):

    .venv/bin/python benchmarks/sae_sweep.py [--layers 2 6 10] [--widths 1024 4096] [--ks 16 32]
        [--tokens 1000000 3000000] [--threads 2] [--out results/benchmarks/sae_sweep.csv]

Prints one row per (layer, width, k, tokens): held-out FVU, L0, dead fraction and training seconds,
each from `caft.directions.saes.train_sae` with the default config's other settings (TopK, lr 1e-3,
10 % of the corpus tokens held out). Nothing else may run beside it for the seconds to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import pandas as pd
import torch

from caft.artifacts import load_tensors
from caft.directions.saes import ACTIVATIONS_FORMAT, SaeTrainConfig, train_sae

ACTIVATIONS = Path("results/saes/activations.safetensors")
BASE = SaeTrainConfig(architecture="topk", lr=1e-3, batch_size=1024, holdout_fraction=0.1, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 6, 10])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/sae_sweep.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tensors, _ = load_tensors(ACTIVATIONS, ACTIVATIONS_FORMAT)
    rows = []
    for layer in args.layers:
        activations = tensors[f"layer_{layer}"].float()
        for width, k, tokens in itertools.product(args.widths, args.ks, args.tokens):
            cfg = dataclasses.replace(BASE, width=width, k=k, tokens=tokens)
            _, report = train_sae(activations, cfg, hook_name=f"model.layers.{layer}", model_name="sweep")
            row = {"layer": layer, "width": width, "k": k, "tokens": tokens, "corpus_rows": len(activations),
                   "fvu": round(report["fvu"], 4), "l0": round(report["l0"], 1),
                   "dead_fraction": round(report["dead_fraction"], 4), "seconds": round(report["seconds"], 1)}
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
