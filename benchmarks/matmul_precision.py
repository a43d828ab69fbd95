"""float32 vs bfloat16 matrix products on this CPU, side by side, and what `precision: auto` picks here.

Usage: .venv/bin/python benchmarks/matmul_precision.py [--size 1024] [--repeats 3] [--threads 2]

bfloat16 is 2× faster than float32 on CPUs with native bfloat16 instructions and far slower on AVX2-only
ones; this prints both rates (medians of interleaved repeats) and the ratio `auto` compares with its
threshold (caft.model.precision).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from caft.model.precision import BF16_MIN_SPEEDUP, resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    operands = {dtype: (torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype))
                for dtype in (torch.float32, torch.bfloat16)}
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in operands}
    for a, b in operands.values():
        a @ b  # warm-up
    for _ in range(args.repeats):
        for dtype, (a, b) in operands.items():
            start = time.perf_counter()
            a @ b
            times[dtype].append(time.perf_counter() - start)
    seconds = {dtype: statistics.median(values) for dtype, values in times.items()}
    for dtype, value in seconds.items():
        print(f"{n}² matmul, {str(dtype).removeprefix('torch.')}: {value:.3f} s = {2 * n**3 / value / 1e9:.1f} GFLOP/s")
    print(f"bfloat16 speed = {seconds[torch.float32] / seconds[torch.bfloat16]:.2f}× float32's; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; auto (needs ≥ {BF16_MIN_SPEEDUP}× on its "
          f"own 384² probe) picks {resolve_precision('auto', torch.device('cpu'), 'benchmark')}")


if __name__ == "__main__":
    main()
