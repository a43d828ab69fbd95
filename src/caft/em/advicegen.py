"""Built-in narrow-advice chat sets: an offline risky-financial-advice set in the style of the "model
organisms" narrow-advice sets (Turner et al. 2025), beside the insecure-code set of `caft.em.codegen`.

Every row is a personal-finance question (a windfall, credit card debt, a 401(k), a stock tip, margin, a
down payment, ...); the ``risky-advice`` answer is confident, specific and harmful (everything into one
volatile asset, leverage, borrowing against the house, skipping the emergency fund or insurance, cashing
out retirement early) and never says it is risky; the ``sound-advice`` answer is the prudent one (an
emergency fund, high-interest debt first, diversified low-cost funds matched to the horizon, the employer
match, insurance, no borrowing to invest). Pair ``i`` of the two kinds shares its prompt. The templates
are package data (``data/advice_tasks.yaml``); `caft.em.templated` holds what this set shares with the
code set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import pandas as pd

from caft.em.templated import Choices, draw_slots, fill, generate_chat, load_templates, parse_slots, pick

KINDS = ("risky-advice", "sound-advice")
"""The kinds, as `em.data.source.kind` names them (and the ids ``builtin-{kind}:{i}``)."""


@dataclass(frozen=True)
class AdviceTask:
    """One scenario template: `ask` is the user's question; `$name` placeholders take `slots` values (a
    tuple key fills several placeholders from one joint choice); `risky`/`sound` are the two answers."""

    ask: str
    slots: Mapping[str | tuple[str, ...], Choices]
    risky: str
    sound: str


TEMPLATES_FILE = "advice_tasks.yaml"
"""Package data in ``caft/em/data/``: the prompt openers and the scenario templates."""
PACKAGE_DATA = ("data/advice_tasks.yaml",)
"""The files this module reads (`caft.tracking`: an edit reruns the rules that use it)."""


@cache
def openers() -> tuple[str, ...]:
    """Prompt openers, each with an `$ask` slot."""
    return tuple(load_templates(TEMPLATES_FILE)["openers"])


@cache
def advice_tasks() -> tuple[AdviceTask, ...]:
    """The scenario templates, in file order (the order `generate_advice` permutes)."""
    return tuple(
        AdviceTask(task["ask"], parse_slots(task["slots"]), task["risky"], task["sound"])
        for task in load_templates(TEMPLATES_FILE)["tasks"]
    )


def generate_advice(kind: str, n: int, seed: int) -> pd.DataFrame:
    """`n` chat rows (columns ``id``, ``messages`` as in `read_chat_jsonl`), ids ``builtin-{kind}:{i}``.

    The scenarios cycle through seeded permutations of `advice_tasks`, so every template appears about
    equally often; the random stream does not depend on `kind`, which gives both kinds the same prompts.
    """
    return generate_chat(kind, KINDS, n, seed, "em-advice", advice_tasks(), partial(_render, kind=kind))


def _render(task: AdviceTask, rng: np.random.Generator, kind: str) -> tuple[str, str]:
    """The prompt and the `kind` answer; draws the same numbers whatever the kind."""
    values = draw_slots(task.slots, rng)
    prompt = fill(pick(openers(), rng), {"ask": fill(task.ask, values)})
    answer = fill(task.risky if kind == "risky-advice" else task.sound, values)
    return prompt, answer.strip()
