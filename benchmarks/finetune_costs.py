"""What ablation hooks, precision and the last-position head cost, measured side by side in one run.

Usage (after `make run` has built results/models/base and the gender splits):

    .venv/bin/python benchmarks/finetune_costs.py [--repeats 5] [--threads 2]

Every comparison interleaves its conditions step by step (A, B, A, B, ...) so that machine noise
hits both alike, and reports medians and their ratio. Numbers in the README come from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec, random_directions
from caft.finetune.engine import prepare_model
from caft.finetune.objectives import LastPositionAnswer
from caft.finetune.training import TrainConfig
from caft.model.loading import ModelSpec, hidden_size, load_model, num_layers
from caft.model.prompts import encode_prompts, last_position_logits

BASE = Path("results/models/base")
TRAIN = Path("results/data/gender/train.parquet")


def seconds_of(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(conditions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per condition; one warm-up call each, then alternating calls."""
    for fn in conditions.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(repeats):
        for name, fn in conditions.items():
            times[name].append(seconds_of(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def training_step(model, objective: LastPositionAnswer, optimizer) -> Callable[[], None]:
    rows = np.arange(objective.size)

    def step() -> None:
        loss, _ = objective.loss(model, rows)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hooked(step: Callable[[], None], model, spec: InterventionSpec | None) -> Callable[[], None]:
    def run() -> None:
        with ablation_hooks(model, spec):
            step()

    return run


def random_jumprelu_sae(d_in: int, d_sae: int, folder: Path, seed: int) -> str:
    """A 16k-latent JumpReLU SAE (Gemma Scope's architecture) with seeded random weights."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        sae.threshold.fill_(0.01)
    sae.save_model(str(folder))
    return str(folder)


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of an n×n matrix product in ``dtype`` (the machine's ceiling for training)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    seconds = interleaved({"mm": lambda: a @ b}, repeats)["mm"]
    return 2 * n**3 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = pd.read_parquet(TRAIN).iloc[: args.batch_size]
    report: list[str] = []

    def fresh(precision: str):
        model, tokenizer = load_model(ModelSpec(name=str(BASE)))
        cfg = TrainConfig(precision=precision, freeze_embeddings=True, batch_size=args.batch_size)
        model = prepare_model(model, cfg, seed=0, freeze_embeddings=cfg.freeze_embeddings)
        objective = LastPositionAnswer(tokenizer, table, "target", precision)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-6)
        return model, tokenizer, cfg, training_step(model, objective, optimizer)

    # 1. precision: float32 vs bf16 autocast (float32 master weights) vs pure bf16 weights
    steps = {p: fresh(p) for p in ("float32", "bf16-autocast", "bf16")}
    timing = interleaved({p: s[3] for p, s in steps.items()}, args.repeats)
    report.append("training step (batch %d, frozen embeddings), seconds:" % args.batch_size)
    for precision, seconds in timing.items():
        report.append(f"  {precision:14s} {seconds:7.3f}  ratio to float32 {seconds / timing['float32']:.2f}")

    # 2. flops: achieved training FLOP/s as a fraction of the measured matmul rate
    model, tokenizer, cfg, step = steps["bf16-autocast"]
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    rates = {"float32": matmul_rate(torch.float32), "bfloat16": matmul_rate(torch.bfloat16)}
    report.append(f"matmul rate: float32 {rates['float32'] / 1e9:.0f} GFLOP/s, "
                  f"bfloat16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s")
    for precision, dtype in (("float32", "float32"), ("bf16-autocast", "bfloat16")):
        achieved = flops / timing[precision]
        report.append(f"  {precision}: {flops / 1e9:.1f} GFLOP per step, {achieved / 1e9:.0f} GFLOP/s achieved = "
                      f"{achieved / rates[dtype]:.0%} of the {dtype} matmul rate")

    # 3. ablation hooks on the default training step (bf16 autocast)
    d_model, n_layers = hidden_size(model), num_layers(model)
    projection = random_directions(d_model, range(n_layers), 20, seed=0)
    layers = [n_layers // 5, 2 * n_layers // 5, 3 * n_layers // 5, 4 * n_layers // 5]
    sae_dir = Path("results/benchmarks/sae_16k")
    saes = {layer: random_jumprelu_sae(d_model, 16384, sae_dir / f"layer_{layer}", seed=layer) for layer in layers}
    latent = InterventionSpec(kind="latent", saes=saes, latents={layer: list(range(0, 400, 20)) for layer in layers})
    timing = interleaved({"none": hooked(step, model, None), "projection": hooked(step, model, projection),
                          "latent": hooked(step, model, latent)}, args.repeats)
    report.append(f"ablation hooks (bf16-autocast step), seconds: none {timing['none']:.3f}")
    report.append(f"  projection, all {n_layers} layers, k=20: {timing['projection']:.3f}  "
                  f"ratio {timing['projection'] / timing['none']:.3f} (target <= 1.03)")
    report.append(f"  latent ablation, 4 layers, 16k-latent JumpReLU SAE, 20 latents each: {timing['latent']:.3f}  "
                  f"ratio {timing['latent'] / timing['none']:.3f} (target <= 1.25)")

    # 4. evaluation: head at the last position only vs full logits at every position
    model.eval()
    prompts = pd.read_parquet(TRAIN)["prompt"].iloc[:32].tolist()
    batch = encode_prompts(tokenizer, prompts)

    def last_only() -> None:
        with torch.inference_mode():
            last_position_logits(model, batch)

    def full() -> None:
        with torch.inference_mode():
            model(**batch).logits[:, -1]

    with torch.inference_mode():
        hidden = model.model(**batch).last_hidden_state
    head = model.get_output_embeddings()

    def head_last() -> None:
        with torch.inference_mode():
            head(hidden[:, -1:])

    def head_full() -> None:
        with torch.inference_mode():
            head(hidden)

    timing = interleaved({"last": last_only, "full": full, "head_last": head_last, "head_full": head_full},
                         args.repeats)
    report.append(f"evaluation batch of 32 (float32): last-position head {timing['last']:.3f} s, "
                  f"full logits {timing['full']:.3f} s, speed-up {timing['full'] / timing['last']:.1f}x (target >= 5)")
    report.append(f"  the head alone ({hidden.shape[1]} positions): last position {timing['head_last']:.3f} s, "
                  f"every position {timing['head_full']:.3f} s, speed-up {timing['head_full'] / timing['head_last']:.0f}x")
    print("\n".join(report))


if __name__ == "__main__":
    main()
