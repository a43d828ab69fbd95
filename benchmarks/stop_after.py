"""Corpus activations at the SAE layers with the forward stopped after the last read block, next to the
full decoder stack, over the same corpus pieces.

Usage (after `snakemake results/corpus/corpus.parquet`):

    .venv/bin/python benchmarks/stop_after.py [--docs 96] [--layers 2 4 6 8 10] [--repeats 3] [--threads 2]

Prints the seconds of `caft.model.hooks.run_decoder` with and without `stop_after`, interleaved,
medians of the repeats, their ratio, and whether the captured residuals are identical.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from caft.model.hooks import capture_residuals, run_decoder
from caft.model.loading import load_checkpoint

BASE = Path("results/models/base")
CORPUS = Path("results/corpus/corpus.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6, 8, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_checkpoint(BASE)
    docs = pd.read_parquet(CORPUS)["input_ids"].tolist()[: args.docs]
    batches = []
    for start in range(0, len(docs), args.batch_size):
        chunk = docs[start:start + args.batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        for row, doc in enumerate(chunk):
            ids[row, : len(doc)] = torch.tensor(doc)
        batches.append((ids, (ids != tokenizer.pad_token_id).long()))

    def run(stop_after: int | None) -> tuple[float, list[torch.Tensor]]:
        kept = []
        start = time.perf_counter()
        with torch.inference_mode(), capture_residuals(model, args.layers) as captured:
            for ids, mask in batches:
                run_decoder(model, ids, mask, stop_after=stop_after)
                kept.append(captured[args.layers[-1]].clone())
        return time.perf_counter() - start, kept

    times: dict[str, list[float]] = {"full stack": [], "stop after the last layer": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, stop in (("full stack", None), ("stop after the last layer", max(args.layers))):
            seconds, outputs[name] = run(stop)
            times[name].append(seconds)
    tokens = sum(int(mask.sum()) for _, mask in batches)
    same = all(torch.equal(a, b) for a, b in zip(*outputs.values()))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{name}: {seconds:.2f} s ({tokens / seconds:.0f} tokens/s)")
    print(f"ratio (stopped / full): {medians['stop after the last layer'] / medians['full stack']:.2f}; "
          f"layers {args.layers} of {len(model.model.layers)}; residuals identical: {same}")


if __name__ == "__main__":
    main()
