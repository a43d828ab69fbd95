"""Sampling on 1 thread vs 2, side by side: is it faster to run two EM sampling jobs at once on 2 cores?

Usage (after `make run ARGS="em"`, which writes the base checkpoint and the held-out prompts):

    .venv/bin/python benchmarks/sampling_threads.py [--base results/em/smollm2/base] [--repeats 2]

Each repeat samples the same 16 held-out coding prompts (96 new tokens, batch 16, the offline default's
sampling settings) with 2 threads, then with 1, alternating. Two 1-thread jobs side by side beat one
2-thread job after another when the printed ratio (1-thread speed / 2-thread speed) is above 0.5.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from caft.em.sampling import SamplingConfig, sample_answers
from caft.model.loading import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("results/em/smollm2/base"))
    parser.add_argument("--held-out", type=Path, default=Path("results/em/data/held_out.parquet"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_checkpoint(args.base)
    held_out = pd.read_parquet(args.held_out).head(16)
    plan = pd.DataFrame({"question_id": held_out["id"], "paraphrase_index": 0, "sample_index": 0,
                         "prompt": held_out["prompt"], "system": None})
    cfg = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=96, batch_size=16, seed=0,
                         backend="transformers")
    seconds: dict[int, list[float]] = {2: [], 1: []}
    for _ in range(args.repeats):
        for threads in (2, 1):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            sample_answers(model, tokenizer, plan, cfg)
            seconds[threads].append(time.perf_counter() - start)
    two, one = (statistics.median(seconds[n]) for n in (2, 1))
    print(f"16 prompts x 96 new tokens: 2 threads {two:.1f} s, 1 thread {one:.1f} s; "
          f"1-thread speed = {two / one:.2f}x of 2 threads (two 1-thread jobs side by side: {2 * two / one:.2f}x)")


if __name__ == "__main__":
    main()
