"""Cost of caching activation differences for PCA, next to plain forward passes over the same tokens.

Usage (after `make run` has built the base model, the gender splits and the pretuned run):

    .venv/bin/python benchmarks/pca_costs.py [--examples 256] [--threads 2]

Prints the seconds and tokens/s of `accumulate_differences` (base and tuned model, hooks at every
layer, streaming moments) and of two plain forward passes (base and tuned) over the same batches,
interleaved, and their ratio. Peak memory of the real stage is in results/benchmarks/pca_moments/.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from caft.directions.moments import accumulate_differences, prompts_with_answers
from caft.model.hooks import run_decoder
from caft.model.loading import ModelSpec, load_model, num_layers
from caft.model.prompts import encode_prompts

BASE = Path("results/models/base")
TUNED = Path("results/gender/runs/none/none/seed0/model")
TRAIN = Path("results/data/gender/train.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, tokenizer = load_model(ModelSpec(name=str(BASE)))
    tuned, _ = load_model(ModelSpec(name=str(TUNED)))
    texts = prompts_with_answers(pd.read_parquet(TRAIN).iloc[: args.examples])
    layers = list(range(num_layers(base)))
    batches = [encode_prompts(tokenizer, texts[i:i + args.batch_size]) for i in range(0, len(texts), args.batch_size)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def cached() -> None:
        accumulate_differences(base, tuned, tokenizer, texts, layers, False, args.batch_size)

    def plain() -> None:
        with torch.inference_mode():
            for batch in batches:
                for model in (base, tuned):
                    run_decoder(model, batch["input_ids"], batch["attention_mask"])

    times: dict[str, list[float]] = {"moments": [], "plain": []}
    for _ in range(args.repeats):
        for name, fn in (("moments", cached), ("plain", plain)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    print(f"{len(texts)} prompts, {tokens} tokens, {len(layers)} layers")
    print(f"  two plain forward passes (base + tuned): {seconds['plain']:.2f} s, {tokens / seconds['plain']:.0f} tokens/s")
    print(f"  difference moments at every layer:       {seconds['moments']:.2f} s, "
          f"{tokens / seconds['moments']:.0f} tokens/s, ratio {seconds['moments'] / seconds['plain']:.2f}")


if __name__ == "__main__":
    main()
