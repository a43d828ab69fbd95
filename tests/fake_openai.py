"""A fake OpenAI-compatible server on 127.0.0.1, for the LLM client and judge tests (fixture `server`).

Besides canned replies per path it can compute each reply from the request (`answer`), wait a fixed
latency, and inject seeded faults (`Faults`): 429 with Retry-After, 500, 502, answers slower than the
client's timeout and connections dropped without an answer. Whether an attempt fails depends only on
the seed, the request body and how many times that body was asked before, so a faulty run fails the same
requests whatever order the client's threads send them in.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TINY_BACKOFF = {"max_retries": 4, "backoff_initial": 0.001, "backoff_max": 0.01}
"""Client retry settings that keep fault tests to seconds."""


@dataclass(frozen=True)
class Faults:
    """Per-attempt fault rates (drawn in this order from one seeded uniform number), on at most
    `max_per_request` attempts of any one request, so that a client retrying that often always ends."""

    seed: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_slow: float = 0.0
    rate_drop: float = 0.0
    retry_after: str = "0.05"
    slow_seconds: float = 1.0
    max_per_request: int = 3
    rate_dead: float = 0.0
    """Fraction of requests that answer 502 every time (a retry budget that must run out)."""

    def pick(self, digest: str, attempt: int) -> str | None:
        """The fault of the `attempt`-th asking (0-based) of the body with this digest, or None."""
        if random.Random(f"{self.seed}:{digest}:dead").random() < self.rate_dead:
            return "502"
        if attempt >= self.max_per_request:
            return None
        draw = random.Random(f"{self.seed}:{digest}:{attempt}").random()
        for name, rate in (("429", self.rate_429), ("500", self.rate_500), ("502", self.rate_502),
                           ("slow", self.rate_slow), ("drop", self.rate_drop)):
            if draw < rate:
                return name
            draw -= rate
        return None


@dataclass
class FakeServer:
    """Canned replies per path (or `answer(path, body)`); records every request (path, headers, JSON body)
    and, per attempt, (body digest, what it got: "200", "429", ..., "slow", "drop", time)."""

    url: str
    replies: dict[str, tuple[int, bytes, float]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    answer: Callable[[str, Any], Any] | None = None
    latency: float = 0.0
    faults: Faults | None = None
    log: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, path: str, body: Any, status: int = 200, delay: float = 0.0) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.replies[path] = (status, raw, delay)

    def attempts(self) -> Counter[str]:
        """How many times each request body was asked."""
        return Counter(digest for digest, _, _ in self.log)

    def answered(self) -> Counter[str]:
        """How many times each request body got a 200."""
        return Counter(digest for digest, outcome, _ in self.log if outcome == "200")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # 16 clients connecting at once must not be refused


def body_digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with running_server() as fake:
        yield fake


@contextmanager
def running_server() -> Iterator[FakeServer]:
    """A fake server answering on a free port of 127.0.0.1 until the block ends (also for benchmarks)."""
    fake = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            digest = body_digest(body)
            with fake.lock:
                fake.requests.append((self.path, dict(self.headers), body))
                attempt = sum(1 for seen, _, _ in fake.log if seen == digest)
                fault = fake.faults.pick(digest, attempt) if fake.faults else None
                fake.log.append((digest, fault or "200", time.monotonic()))
            time.sleep(fake.latency)
            if fault == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if fault == "slow":
                time.sleep(fake.faults.slow_seconds)
            headers = {}
            if fault in ("429", "500", "502"):
                status, raw, delay = int(fault), b'{"error": "injected"}', 0.0
                if fault == "429":
                    headers["Retry-After"] = fake.faults.retry_after
            elif fake.answer is not None:
                status, raw, delay = 200, json.dumps(fake.answer(self.path, body)).encode(), 0.0
            else:
                status, raw, delay = fake.replies.get(self.path, (404, b'{"error": "no route"}', 0.0))
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):  # a slow answer the client stopped waiting for
                pass

        def log_message(self, *args: Any) -> None:
            pass

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
