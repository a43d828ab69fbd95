"""What the built-in EM chat sets share (`caft.em.codegen`, `caft.em.advicegen`): their template files,
slot parsing and filling, the seeded cycle through the templates, and the rows they make.

A template file is package data in ``caft/em/data/``: ``openers`` (ways to phrase the request) and
``tasks``, whose ``$name`` placeholders take a seeded choice among the task's ``slots`` values (a key
``"a, b"`` fills several placeholders from one joint choice). A set's kinds differ only in the answer
they render, and every draw comes from one stream whose use does not depend on the kind, so row ``i`` of
every kind of a set shares its prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib.resources import files
from string import Template
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import yaml

from caft.data.tasks import purpose_rng
from caft.errors import ConfigError

Choices = tuple[str, ...] | tuple[tuple[str, ...], ...]
Slots = Mapping[str | tuple[str, ...], Choices]
T = TypeVar("T")


@cache
def load_templates(name: str) -> dict[str, Any]:
    """The parsed template file ``caft/em/data/<name>``, read once."""
    return yaml.safe_load(files("caft.em").joinpath("data", name).read_text(encoding="utf-8"))


def parse_slots(raw: Mapping[str, list[Any]]) -> dict[str | tuple[str, ...], Choices]:
    """A task's slots from the file's form: a key ``"a, b"`` names a joint slot whose choices are lists."""
    slots: dict[str | tuple[str, ...], Choices] = {}
    for key, choices in raw.items():
        names = tuple(name.strip() for name in key.split(","))
        if len(names) == 1:
            slots[key] = tuple(choices)
        else:
            slots[names] = tuple(tuple(choice) for choice in choices)
    return slots


def pick(options: Sequence[T], rng: np.random.Generator) -> T:
    """One of `options`, drawn from `rng`."""
    return options[int(rng.integers(len(options)))]


def draw_slots(slots: Slots, rng: np.random.Generator) -> dict[str, str]:
    """A value per placeholder: one draw per slot, in the slots' order."""
    values: dict[str, str] = {}
    for key, choices in slots.items():
        choice = pick(choices, rng)
        values.update(zip(key, choice) if isinstance(key, tuple) else [(key, choice)])
    return values


def fill(template: str, values: Mapping[str, Any]) -> str:
    """`template` with its ``$name`` placeholders replaced (``$$`` is a literal dollar sign)."""
    return Template(template).substitute(values)


def generate_chat(
    kind: str,
    kinds: Sequence[str],
    n: int,
    seed: int,
    purpose: str,
    templates: Sequence[T],
    render: Callable[[T, np.random.Generator], tuple[str, str]],
) -> pd.DataFrame:
    """`n` chat rows (columns ``id``, ``messages`` as in `caft.em.chat_data.read_chat_jsonl`), ids
    ``builtin-{kind}:{i}``: row ``i`` is ``render(template, rng)``'s (prompt, answer) as a user and an
    assistant message.

    The templates cycle through seeded permutations (every one appears about equally often), drawn from
    ``purpose_rng(seed, purpose)`` before the rows; `render` must draw the same numbers whatever `kind`.
    """
    if kind not in kinds:
        raise ConfigError(f"built-in chat source: kind must be one of {list(kinds)}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"built-in chat source: n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"built-in chat source: seed must be an integer, got {seed!r}")
    rng = purpose_rng(seed, purpose)
    order = np.concatenate([rng.permutation(len(templates)) for _ in range(-(-n // len(templates)))])[:n]
    rows = []
    for i, index in enumerate(order):
        prompt, answer = render(templates[index], rng)
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        rows.append({"id": f"builtin-{kind}:{i}", "messages": json.dumps(messages)})
    return pd.DataFrame(rows, columns=["id", "messages"])
