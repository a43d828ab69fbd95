"""Where a fine-tune's time goes on 2 cores, measured side by side in one run: threads, compilation, padding.

Usage (after `make run` has built results/models/base and the default task's splits):

    .venv/bin/python benchmarks/finetune_parallel.py [--steps 10] [--repeats 2] [--compile]

1. **Two 1-thread fine-tunes at once vs one 2-thread fine-tune.** Each process loads the base model,
   prepares it as the workflow does (default recipe, frozen embeddings, `precision: auto`), takes two
   warm-up steps, waits at a barrier so the timed steps overlap, then times ``--steps`` training steps of
   the default batch (8 D_amb prompts). Throughput is steps per second summed over processes; the two
   set-ups alternate ``--repeats`` times. Two at once pay when the ratio printed is above 1.
2. **torch.compile of the model** (``--compile``; inductor on CPU): the first compiled step (compilation
   included), the steady step against eager's, and the largest difference in loss over ``--steps`` steps
   from the same initialisation and batches.
3. **Fused AdamW** (the engine's) against PyTorch's default (foreach) on two models prepared alike, steps
   interleaved: the steady step and the largest loss difference.
4. **Padding**: the fraction of padded positions in batches of a seeded random order, as training draws
   them (left padding to the longest prompt of each batch), against length-bucketed batches (sorted
   within windows of 8 batches).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from caft.finetune.engine import adamw, optimizer_step, prepare_model
from caft.finetune.objectives import LastPositionAnswer
from caft.finetune.training import TrainConfig
from caft.model.loading import ModelSpec, load_model, load_tokenizer
from caft.model.precision import resolve_precision
from finetune_costs import interleaved, seconds_of  # this folder's timing helpers

BASE = Path("results/models/base")
TRAIN = Path("results/data/verbs_sentiment/train.parquet")
ANSWER = "answer_b"
"""The default triple (verbs, sentiment, intended 1) trains on the second question's (sentiment) answer."""


def training_steps(base: Path, train: Path, threads: int, seed: int = 0, fused: bool = True):
    """A prepared model and a function running the next training step (default recipe); its losses.
    ``fused=False``: PyTorch's default AdamW (foreach) instead of the engine's fused one."""
    torch.set_num_threads(threads)
    model, tokenizer = load_model(ModelSpec(name=str(base)))
    precision = resolve_precision("auto", torch.device("cpu"), "benchmark")
    recipe = TrainConfig(precision=precision)
    model = prepare_model(model, recipe, seed, freeze_embeddings=True)
    table = pd.read_parquet(train)
    objective = LastPositionAnswer(tokenizer, table, ANSWER, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, recipe) if fused else torch.optim.AdamW(
        params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    order = np.random.default_rng(seed).permutation(objective.size)
    losses: list[float] = []

    def step() -> None:
        index = len(losses) % (objective.size // recipe.batch_size)
        rows = order[index * recipe.batch_size:(index + 1) * recipe.batch_size]
        losses.append(objective.step(model, rows, recipe.micro_batch).loss)
        optimizer_step(params, optimizer, scheduler, recipe.max_grad_norm)

    return model, step, losses, precision


def _worker(base: Path, train: Path, threads: int, steps: int, barrier, results) -> None:
    _, step, _, _ = training_steps(base, train, threads)
    for _ in range(2):
        step()
    barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    results.put(time.perf_counter() - start)


def throughput(base: Path, train: Path, processes: int, threads: int, steps: int) -> float:
    """Training steps per second, summed over ``processes`` running at once with ``threads`` each."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_worker, args=(base, train, threads, steps, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if any(worker.exitcode for worker in workers):
        raise RuntimeError(f"a training process failed (exit codes {[w.exitcode for w in workers]})")
    return sum(steps / results.get() for _ in workers)


def compiled_vs_eager(base: Path, train: Path, steps: int) -> str:
    _, eager_step, eager_losses, _ = training_steps(base, train, threads=2)
    model, compiled_step, compiled_losses, _ = training_steps(base, train, threads=2)
    model.forward = torch.compile(model.forward)
    first = seconds_of(compiled_step)
    timing = interleaved({"eager": eager_step, "compiled": compiled_step}, steps - 1)
    eager, compiled = timing["eager"], timing["compiled"]
    gap = max(abs(a - b) for a, b in zip(eager_losses, compiled_losses))
    return (f"torch.compile: first step {first:.1f} s (compilation included); steady step eager {eager:.2f} s, "
            f"compiled {compiled:.2f} s (speed-up {eager / compiled:.2f}x); largest loss difference over "
            f"{len(eager_losses)} steps {gap:.2e} ({'bit-identical' if gap == 0 else 'not bit-identical'})")


def fused_vs_foreach(base: Path, train: Path, steps: int) -> str:
    _, foreach_step, foreach_losses, _ = training_steps(base, train, threads=2, fused=False)
    _, fused_step, fused_losses, _ = training_steps(base, train, threads=2)
    timing = interleaved({"foreach": foreach_step, "fused": fused_step}, steps)
    gap = max(abs(a - b) for a, b in zip(foreach_losses, fused_losses))
    return (f"AdamW: steady step foreach (PyTorch's default) {timing['foreach']:.2f} s, fused {timing['fused']:.2f} s "
            f"(speed-up {timing['foreach'] / timing['fused']:.2f}x); largest loss difference over "
            f"{len(fused_losses)} steps {gap:.2e}")


def padding(train: Path, base: Path, batch_size: int = 8, window: int = 8) -> str:
    tokenizer = load_tokenizer(ModelSpec(name=str(base)))
    lengths = np.array([len(ids) for ids in tokenizer(pd.read_parquet(train)["prompt"].tolist())["input_ids"]])
    order = np.random.default_rng(0).permutation(len(lengths))

    def waste(batches: list[np.ndarray]) -> float:
        padded = sum(len(b) * lengths[b].max() for b in batches)
        return 1 - sum(lengths[b].sum() for b in batches) / padded

    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    bucketed = []
    for start in range(0, len(order), batch_size * window):
        chunk = order[start:start + batch_size * window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        bucketed += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return (f"padding: prompts {lengths.min()}-{lengths.max()} tokens (median {int(np.median(lengths))}); padded "
            f"positions {waste(batches):.1%} of each batch in a seeded random order, {waste(bucketed):.1%} "
            f"length-bucketed (windows of {window} batches)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--train", type=Path, default=TRAIN)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    print(padding(args.train, args.base), flush=True)
    print(fused_vs_foreach(args.base, args.train, args.steps), flush=True)
    rates: dict[str, list[float]] = {"one 2-thread": [], "two 1-thread": []}
    for _ in range(args.repeats):
        rates["one 2-thread"].append(throughput(args.base, args.train, 1, 2, args.steps))
        rates["two 1-thread"].append(throughput(args.base, args.train, 2, 1, args.steps))
    one, two = (statistics.median(rates[n]) for n in rates)
    print(f"training steps/s ({args.steps} timed steps, median of {args.repeats}): one 2-thread fine-tune {one:.3f}, "
          f"two 1-thread fine-tunes at once {two:.3f} in total; ratio {two / one:.2f}", flush=True)
    if args.compile:
        print(compiled_vs_eager(args.base, args.train, args.steps), flush=True)


if __name__ == "__main__":
    main()
