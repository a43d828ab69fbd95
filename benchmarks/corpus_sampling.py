"""Cost of generating the offline corpus under different sampling settings, side by side in one run.

Usage (after `make run` has built the base model):

    .venv/bin/python benchmarks/corpus_sampling.py [--docs 32] [--threads 2]

Generates the same documents with nucleus sampling (top_p 0.95, temperature 1.0: the earlier
default), plain sampling at temperature 0.8 (the default) and the default at batch 16 instead of 64,
and prints seconds, documents/s and each setting's time relative to the default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from caft.data.corpus import CorpusConfig, generate_corpus
from caft.model.loading import load_checkpoint

BASE = Path("results/models/base")
SETTINGS = {
    "default (T 0.8, top_p 1.0, batch 64)": {"temperature": 0.8, "top_p": 1.0, "batch_size": 64},
    "nucleus (T 1.0, top_p 0.95, batch 64)": {"temperature": 1.0, "top_p": 0.95, "batch_size": 64},
    "default at batch 16": {"temperature": 0.8, "top_p": 1.0, "batch_size": 16},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_checkpoint(BASE)
    seconds = {}
    for name, sampling in SETTINGS.items():
        cfg = CorpusConfig.from_config({"from": "generated", "docs": args.docs, "new_tokens": args.new_tokens,
                                        "seed": 0, **sampling})
        start = time.perf_counter()
        generate_corpus(model, tokenizer, cfg)
        seconds[name] = time.perf_counter() - start
    default = next(iter(seconds.values()))
    for name, value in seconds.items():
        print(f"{name:40s} {value:7.1f} s  {args.docs / value:5.2f} docs/s  {value / default:4.2f}x the default")


if __name__ == "__main__":
    main()
