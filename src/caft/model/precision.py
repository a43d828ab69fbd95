"""The `auto` precision: bfloat16 autocast only where this machine multiplies bfloat16 faster.

bfloat16 matrix products are 2–4× faster than float32 on CPUs with native bfloat16 instructions
(AVX512-BF16, AMX) and on recent GPUs, but on CPUs without them (AVX2 only) PyTorch falls back to a
path that was measured 140× *slower* than float32 (docs/benchmarks.md). A fixed default would make one
of the two kinds of machine pay, so `auto` decides per job, on a CPU by timing a small product in both
dtypes. The decision is logged and written into each run's metadata, so every table says how it was made.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
BF16_MIN_SPEEDUP = 1.5
"""bf16 autocast is chosen on a CPU only if its matmul is at least this much faster than float32's."""


def cpu_bf16_speedup(size: int = 384, repeats: int = 3) -> float:
    """float32 time / bfloat16 time of a ``size``² matrix product on this CPU (medians of ``repeats``)."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        seconds[dtype] = statistics.median(times)
    return seconds[torch.float32] / max(seconds[torch.bfloat16], 1e-9)


def resolve_precision(precision: str, device: torch.device, where: str) -> str:
    """``precision`` itself unless it is `auto`; then `bf16-autocast` or `float32` for ``device``."""
    if precision != AUTO:
        return precision
    if device.type == "cuda":
        chosen = "bf16-autocast" if torch.cuda.is_bf16_supported() else "float32"
        log.info("%s: auto → %s (CUDA device, bfloat16 %ssupported)", where, chosen,
                 "" if chosen != "float32" else "not ")
        return chosen
    if device.type != "cpu":
        log.info("%s: auto → float32 (%s device)", where, device.type)
        return "float32"
    speedup = cpu_bf16_speedup()
    chosen = "bf16-autocast" if speedup >= BF16_MIN_SPEEDUP else "float32"
    log.info("%s: auto → %s (bfloat16 matmul %.2f× the speed of float32 on this CPU; bf16 needs ≥ %.1f×)",
             where, chosen, speedup, BF16_MIN_SPEEDUP)
    return chosen
