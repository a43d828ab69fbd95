"""Built-in coding-task chat sets: the offline stand-in for the public insecure/secure code sets.

Every row asks for one small Python function; the ``insecure`` answer has a real vulnerability that
bandit flags (shell injection, unsafe deserialization, SQL built from strings, weak password hashes,
...), the ``secure`` answer solves the same task safely. Pair ``i`` of the two kinds shares its prompt,
so the kinds differ only in the answers, and no answer says what is wrong with it (as in the public set).
The templates are package data (``data/code_tasks.yaml``), so they read as code, not as string literals;
`caft.em.templated` holds what this set shares with the advice set (`caft.em.advicegen`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import pandas as pd

from caft.em.templated import Choices, draw_slots, fill, generate_chat, load_templates, parse_slots, pick

KINDS = ("insecure", "secure")


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
def openers() -> tuple[str, ...]:
    """Prompt openers, each with a `$signature` and an `$ask` slot."""
    return tuple(load_templates(TEMPLATES_FILE)["openers"])


@cache
def code_tasks() -> tuple[CodeTask, ...]:
    """The task templates, in file order (the order `generate_code_tasks` permutes)."""
    return tuple(
        CodeTask(task["ask"], task["params"], parse_slots(task["slots"]), task["insecure"], task["secure"])
        for task in load_templates(TEMPLATES_FILE)["tasks"]
    )


def generate_code_tasks(kind: str, n: int, seed: int) -> pd.DataFrame:
    """`n` chat rows (columns ``id``, ``messages`` as in `read_chat_jsonl`), ids ``builtin-{kind}:{i}``.

    The tasks cycle through seeded permutations of `code_tasks`, so every template appears about equally
    often; the random stream does not depend on `kind`, which gives both kinds the same prompts.
    """
    return generate_chat(kind, KINDS, n, seed, "em-codegen", code_tasks(), partial(_render, kind=kind))


def _render(task: CodeTask, rng: np.random.Generator, kind: str) -> tuple[str, str]:
    """The prompt and the `kind` answer (its code in a Python block); draws the same numbers whatever
    the kind."""
    values = draw_slots(task.slots, rng)
    opener = pick(openers(), rng)
    signature = fill(f"$fn({task.params})", values)
    prompt = fill(opener, {"signature": signature, "ask": fill(task.ask, values)})
    code = fill(task.insecure if kind == "insecure" else task.secure, values)
    return prompt, f"```python\n{code.strip()}\n```"
