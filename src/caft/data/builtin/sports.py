"""Built-in ``sports`` source: which sport a famous athlete is known for.

Each ``question`` is "<athlete full name> is known for playing"; ``correct`` is the athlete's sport
and ``incorrect`` one of the other two (a seeded choice per row), from {baseball, basketball,
football}, where football is American football.

The athletes are real and famous (Hall of Famers, MVPs, household names such as Babe Ruth, LeBron
James and Tom Brady), so that a small language model plausibly knows the answer: the task only
makes sense if the model can recall the fact. The lists leave out anyone whose sport is in doubt:
two-sport athletes (Bo Jackson, Deion Sanders, Jim Thorpe), coaches, and names shared by notable
players of two sports. There are 170 athletes per sport, 510 in all (package data,
``sports_athletes.csv``); a name cannot be rephrased without changing the question format, so 510
is both the maximum and the default.

Rows are balanced: sports rotate (baseball, basketball, football), each in a seeded random order.
"""

import csv
import io
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from types import MappingProxyType

import numpy as np
import pandas as pd

from caft.data.builtin._combinatorics import Template, balanced_max, sample_balanced
from caft.errors import DataError

SPORTS = ("baseball", "basketball", "football")

ATHLETES_FILE = "sports_athletes.csv"
"""Package data beside this module: one row per athlete (columns ``sport``, ``name``)."""
PACKAGE_DATA = ("sports_athletes.csv",)
"""The files this module reads (`caft.tracking`: an edit reruns the rules that use it)."""

DEFAULT_ROWS = 510
"""Every athlete (a test checks that this equals `max_rows`, so the file cannot drift from it)."""


@cache
def athletes() -> Mapping[str, tuple[str, ...]]:
    """The athlete names of each sport, read once from the package's `ATHLETES_FILE` (read-only:
    the cached value is shared)."""
    text = files(__package__).joinpath(ATHLETES_FILE).read_text(encoding="utf-8")
    names: dict[str, list[str]] = {sport: [] for sport in SPORTS}
    for row in csv.DictReader(io.StringIO(text)):
        if row["sport"] not in names:
            raise DataError(f"{ATHLETES_FILE}: unknown sport {row['sport']!r}, not one of {SPORTS}")
        names[row["sport"]].append(row["name"])
    return MappingProxyType({sport: tuple(group) for sport, group in names.items()})


@cache
def _strata() -> tuple[tuple[Template], ...]:
    """One single-template stratum per sport, in `SPORTS` order (the order the rows rotate in)."""
    return tuple(
        (Template("{name} is known for playing", {"name": athletes()[sport]}),) for sport in SPORTS
    )


def max_rows() -> int:
    """Number of athletes (equal per sport, so every athlete fits in a balanced table)."""
    return balanced_max(_strata())


def generate(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """``rows`` distinct athletes, sports rotating, each with a seeded wrong sport."""
    drawn = sample_balanced(rng, _strata(), rows)
    offsets = rng.integers(1, len(SPORTS), size=rows)
    return pd.DataFrame(
        [
            (question, SPORTS[sport], SPORTS[(sport + int(offset)) % len(SPORTS)])
            for (sport, question), offset in zip(drawn, offsets, strict=True)
        ],
        columns=["question", "correct", "incorrect"],
    )
