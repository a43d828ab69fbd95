"""A job's record of finished LLM requests, so a job that dies repeats none of them when rerun.

Every finished result is appended as one JSON line ``{"key": <sha256 of the request>, "value": ...}``
and flushed at once: a job killed hard (kill -9, a SLURM time limit, a spent retry budget) leaves every
answer it had received on disk, and at most its last line torn, which the next run cuts off. The file
lives beside the job's artifact (`record_path`) and is removed once the artifact is written
(`caft.interpret.clients.job_record`): the artifact is the result, the record only a way to reach it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from caft.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")
RECORD_SUFFIX = ".record.jsonl"


def record_path(output: str | Path) -> Path:
    """Where the record of the job writing `output` lives: beside it, named after it."""
    output = Path(output)
    return output.with_name(output.name + RECORD_SUFFIX)


def request_key(request: Any) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no spaces): equal requests, equal keys."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class ResultRecord:
    """Finished results by request key, read back from `path` and appended to it (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._values: dict[str, Any] = self._read()
        self._handle: IO[str] | None = None

    def _read(self) -> dict[str, Any]:
        """The complete lines of an existing record; a torn last line (no newline) is cut off the file."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        complete = raw[:raw.rfind(b"\n") + 1]
        if len(complete) < len(raw):
            log.info("%s: dropping a torn last line (%d bytes) left by a killed job", self.path,
                     len(raw) - len(complete))
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        values = {}
        for number, line in enumerate(complete.decode().splitlines(), 1):
            try:
                entry = json.loads(line)
                values[entry["key"]] = entry["value"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"{self.path} line {number} is not a record line ({err}); delete the file to "
                                "start the job over") from err
        if values:
            log.info("%s: resuming with %d finished requests", self.path, len(values))
        return values

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def keys(self) -> set[str]:
        return set(self._values)

    def get(self, key: str) -> Any:
        return self._values[key]

    def put(self, key: str, value: Any) -> None:
        """Append one result and flush it to the operating system before returning."""
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(line)
            self._handle.flush()
            self._values[key] = value

    def remove(self) -> None:
        """Close and delete the file (the artifact it led to is written)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def recorded(record: ResultRecord | None, request: Any, compute: Callable[[], T],
             encode: Callable[[T], Any] = lambda value: value,
             decode: Callable[[Any], T] = lambda value: value) -> T:
    """`compute()`, unless `record` already holds the result of `request`; a computed result is recorded.

    `encode`/`decode` turn the result into JSON and back (exactly: JSON keeps every float64).
    """
    if record is None:
        return compute()
    key = request_key(request)
    if key in record:
        return decode(record.get(key))
    value = compute()
    record.put(key, encode(value))
    return value
