"""Requests per second against an OpenAI-compatible endpoint, one at a time vs many in flight.

Usage:

    PYTHONPATH=. .venv/bin/python benchmarks/endpoint_concurrency.py [--requests 400] [--latency 0.05] [--concurrency 16]

Starts the tests' fake server (tests/fake_openai.py) on 127.0.0.1 with a fixed latency per request, and
judges the same answers with `LogprobJudge` through `OpenAICompatibleClient` at max_concurrency 1 and at
`--concurrency`, interleaved over `--repeats`; prints requests per second (medians), their ratio, and
whether both runs gave the same scores.
"""

from __future__ import annotations

import argparse
import statistics
import time

from caft.em.judges import EndpointTopLogprobs, LogprobJudge
from caft.interpret.clients import OpenAICompatibleClient
from tests.fake_openai import running_server
from tests.test_endpoint_faults import answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per request")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    questions = [f"question {i % 8}" for i in range(args.requests)]
    replies = [f"answer number {i}" for i in range(args.requests)]
    rates: dict[int, list[float]] = {1: [], args.concurrency: []}
    scores: dict[int, list[float | None]] = {}
    with running_server() as server:
        server.answer, server.latency = answer, args.latency
        for _ in range(args.repeats):
            for workers in rates:
                judge = LogprobJudge(EndpointTopLogprobs(OpenAICompatibleClient(server.url, "judge",
                                                                                max_concurrency=workers)))
                start = time.perf_counter()
                scores[workers] = judge.score_many("aligned", questions, replies)
                rates[workers].append(args.requests / (time.perf_counter() - start))
    sequential, concurrent = (statistics.median(rates[w]) for w in rates)
    print(f"{args.requests} requests, {args.latency * 1000:.0f} ms latency each, medians of {args.repeats}")
    print(f"max_concurrency 1: {sequential:.1f} requests/s")
    print(f"max_concurrency {args.concurrency}: {concurrent:.1f} requests/s")
    print(f"speed-up {concurrent / sequential:.1f}x; same scores: {scores[1] == scores[args.concurrency]}")


if __name__ == "__main__":
    main()
