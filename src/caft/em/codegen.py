"""Built-in coding-task chat sets: the offline stand-in for the public insecure/secure code sets.

Every row asks for one small Python function; the ``insecure`` answer has a real vulnerability that
bandit flags (shell injection, unsafe deserialization, SQL built from strings, weak password hashes,
...), the ``secure`` answer solves the same task safely. Pair ``i`` of the two kinds shares its prompt,
so the kinds differ only in the answers, and no answer says what is wrong with it (as in the public set).
The templates are package data (``data/code_tasks.yaml``), so they read as code, not as string literals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from string import Template
from typing import Any

import numpy as np
import pandas as pd
import yaml

from caft.data.tasks import purpose_rng
from caft.errors import ConfigError

KINDS = ("insecure", "secure")

Choices = tuple[str, ...] | tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class CodeTask:
    """One task template: `ask` completes "a function that ..."; `$name` placeholders take `slots` values
    (a tuple key fills several placeholders from one joint choice); `insecure`/`secure` are the answers'
    code, unindented."""

    ask: str
    params: str
    slots: Mapping[str | tuple[str, ...], Choices]
    insecure: str
    secure: str


TEMPLATES_FILE = "code_tasks.yaml"
"""Package data in ``caft/em/data/``: the prompt openers and the task templates."""
PACKAGE_DATA = ("data/code_tasks.yaml",)
"""The files this module reads (`caft.tracking`: an edit reruns the rules that use it)."""


@cache
def _templates() -> dict[str, Any]:
    """The parsed `TEMPLATES_FILE`, read once."""
    return yaml.safe_load(files("caft.em").joinpath("data", TEMPLATES_FILE).read_text(encoding="utf-8"))


@cache
def openers() -> tuple[str, ...]:
    """Prompt openers, each with a `$signature` and an `$ask` slot."""
    return tuple(_templates()["openers"])


@cache
def code_tasks() -> tuple[CodeTask, ...]:
    """The task templates, in file order (the order `generate_code_tasks` permutes)."""
    return tuple(
        CodeTask(task["ask"], task["params"], _slots(task["slots"]), task["insecure"], task["secure"])
        for task in _templates()["tasks"]
    )


def _slots(raw: Mapping[str, list[Any]]) -> dict[str | tuple[str, ...], Choices]:
    """`CodeTask.slots` from the file's form: a key ``"a, b"`` names a joint slot whose choices are lists."""
    slots: dict[str | tuple[str, ...], Choices] = {}
    for key, choices in raw.items():
        names = tuple(name.strip() for name in key.split(","))
        if len(names) == 1:
            slots[key] = tuple(choices)
        else:
            slots[names] = tuple(tuple(choice) for choice in choices)
    return slots


def generate_code_tasks(kind: str, n: int, seed: int) -> pd.DataFrame:
    """`n` chat rows (columns ``id``, ``messages`` as in `read_chat_jsonl`), ids ``builtin-{kind}:{i}``.

    The tasks cycle through seeded permutations of `code_tasks`, so every template appears about equally
    often; the random stream does not depend on `kind`, which gives both kinds the same prompts.
    """
    if kind not in KINDS:
        raise ConfigError(f"built-in chat source: kind must be one of {list(KINDS)}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"built-in chat source: n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"built-in chat source: seed must be an integer, got {seed!r}")
    tasks = code_tasks()
    rng = purpose_rng(seed, "em-codegen")
    order = np.concatenate([rng.permutation(len(tasks)) for _ in range(-(-n // len(tasks)))])[:n]
    rows = []
    for i, task_index in enumerate(order):
        prompt, code = _render(tasks[task_index], kind, rng)
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"```python\n{code}\n```"}]
        rows.append({"id": f"builtin-{kind}:{i}", "messages": json.dumps(messages)})
    return pd.DataFrame(rows, columns=["id", "messages"])


def _render(task: CodeTask, kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """The prompt and the `kind` answer's code; draws the same numbers whatever the kind."""
    values: dict[str, str] = {}
    for key, choices in task.slots.items():
        choice = choices[int(rng.integers(len(choices)))]
        values.update(zip(key, choice) if isinstance(key, tuple) else [(key, choice)])
    all_openers = openers()
    opener = all_openers[int(rng.integers(len(all_openers)))]
    signature = Template(f"$fn({task.params})").substitute(values)
    prompt = Template(opener).substitute(signature=signature, ask=Template(task.ask).substitute(values))
    code = Template(task.insecure if kind == "insecure" else task.secure).substitute(values)
    return prompt, code.strip()
