"""Throughput of fine-tuning on a small CPU: one run on every core vs one single-threaded run per core.

Usage (after `make run` has built results/models/base and an MCMC training split):

    .venv/bin/python benchmarks/finetune_threads.py [--steps 12] [--cores 2] [--split PATH]

Runs the default training step (batch 8, bf16 autocast, frozen embeddings) for ``--steps`` steps
twice, in one run: (a) one process with ``--cores`` threads, (b) ``--cores`` processes with one
thread each, started together. Prints the steps per second of each and their ratio, which decides
whether `finetune` jobs should take one thread each (``threads:`` in rules/finetune.smk), and
whether the thread count changes the losses (the determinism of a run across machines).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import pandas as pd
import torch

from caft.finetune.training import TrainConfig, _loss, prepare_model
from caft.model.loading import ModelSpec, load_model
from caft.model.prompts import letter_token_ids

BASE = Path("results/models/base")
SPLIT = Path("results/data/verbs_sentiment/train.parquet")


def run_steps(threads: int, steps: int, split: str, start: mp.Event | None = None) -> tuple[float, list[float]]:
    """(seconds, losses) of ``steps`` training steps of the default recipe at ``threads`` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, tokenizer = load_model(ModelSpec(name=str(BASE)))
    cfg = TrainConfig(precision="bf16-autocast", freeze_embeddings=True, batch_size=8)
    model = prepare_model(model, cfg, seed=0)
    table = pd.read_parquet(split)
    ids = letter_token_ids(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-5)
    losses = []
    if start is not None:
        start.wait()
    began = time.perf_counter()
    for step in range(steps):
        rows = table.iloc[step * 8 : (step + 1) * 8]
        targets = torch.tensor([ids[t] for t in rows["target"]])
        loss, _ = _loss(model, tokenizer, rows["prompt"], targets, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return time.perf_counter() - began, losses


def _worker(steps: int, split: str, start: mp.Event, results: mp.Queue) -> None:
    results.put(run_steps(1, steps, split, start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--split", default=str(SPLIT))
    args = parser.parse_args()

    together, together_losses = run_steps(args.cores, args.steps, args.split)

    context = mp.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_worker, args=(args.steps, args.split, start, results))
               for _ in range(args.cores)]
    for worker in workers:
        worker.start()
    time.sleep(30)  # every worker has loaded its model before the clock starts
    start.set()
    outcomes = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    apart = max(seconds for seconds, _ in outcomes)

    rate_together = args.steps / together
    rate_apart = args.cores * args.steps / apart
    print(f"one process, {args.cores} threads: {rate_together:.3f} steps/s ({together / args.steps:.3f} s/step)")
    print(f"{args.cores} processes, 1 thread each: {rate_apart:.3f} steps/s in all "
          f"({apart / args.steps:.3f} s/step each)")
    print(f"throughput ratio (processes / threads): {rate_apart / rate_together:.2f}")
    same = all(losses == together_losses for _, losses in outcomes)
    drift = max(abs(a - b) for _, losses in outcomes for a, b in zip(losses, together_losses))
    print(f"losses at 1 thread equal those at {args.cores} threads: {same} (max difference {drift:.2e})")


if __name__ == "__main__":
    main()
