"""Seeded sampling of distinct sentences from small template grammars.

Every built-in source is a list of *strata* (the classes that must stay balanced: pronoun case,
number of the head noun, sentiment label, sport). A stratum is a list of templates, and a template
is a format string whose fields each range over a word list, so it denotes the Cartesian product of
its lists. Rows are drawn without replacement from that product with an explicit
``numpy.random.Generator``; identical (rng state, rows) therefore gives identical tables, and no
sentence is drawn twice.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Template:
    """A format string with ``{field}`` slots and the words each slot ranges over."""

    pattern: str
    slots: Mapping[str, Sequence[str]]

    def size(self) -> int:
        """Number of sentences the template yields (the product of its word-list lengths)."""
        return prod(len(words) for words in self.slots.values())

    def render(self, index: int) -> str:
        """The ``index``-th sentence, decoding ``index`` as a mixed-radix number over the slots."""
        chosen = {}
        for field, words in self.slots.items():
            index, digit = divmod(index, len(words))
            chosen[field] = words[digit]
        return self.pattern.format(**chosen)


def stratum_size(templates: Sequence[Template]) -> int:
    """Number of sentences a stratum yields."""
    return sum(template.size() for template in templates)


def balanced_max(strata: Sequence[Sequence[Template]]) -> int:
    """Most rows a table can have while every stratum contributes equally (±1)."""
    return len(strata) * min(stratum_size(templates) for templates in strata)


def sample_stratum(rng: np.random.Generator, templates: Sequence[Template], rows: int) -> list[str]:
    """``rows`` distinct sentences of one stratum, in a seeded random order."""
    sizes = [template.size() for template in templates]
    offsets = np.cumsum([0, *sizes])
    picks = rng.choice(int(offsets[-1]), size=rows, replace=False)
    owners = np.searchsorted(offsets, picks, side="right") - 1
    return [
        templates[owner].render(int(pick - offsets[owner]))
        for pick, owner in zip(picks, owners, strict=True)
    ]


def sample_balanced(
    rng: np.random.Generator, strata: Sequence[Sequence[Template]], rows: int
) -> list[tuple[int, str]]:
    """``rows`` (stratum index, sentence) pairs, strata interleaved round-robin.

    Row ``i`` belongs to stratum ``i % len(strata)``, so every prefix of the table is balanced;
    within a stratum the order is a seeded shuffle.
    """
    count = len(strata)
    drawn = [
        sample_stratum(rng, templates, len(range(stratum, rows, count)))
        for stratum, templates in enumerate(strata)
    ]
    return [(i % count, drawn[i % count][i // count]) for i in range(rows)]


def balanced_choice(rng: np.random.Generator, options: Sequence[T], rows: int) -> list[T]:
    """``rows`` values from ``options``, each used equally often (±1), in a seeded order."""
    order = rng.permutation(np.resize(np.arange(len(options)), rows))
    return [options[i] for i in order]
