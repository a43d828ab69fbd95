"""Built-in ``verbs`` source: subject-verb agreement across an attractor of the other number.

Each ``question`` is "Choose the correct verb form for the following sentence: " followed by a
subject noun phrase with no verb yet; ``correct`` is the present-tense verb that agrees with the
phrase's head noun and ``incorrect`` is the same verb in the other number, from the pairs
does/do, is/are, goes/go, has/have (the pair is a seeded, balanced choice per row).

Phrases come from three structures, each with a distracting *attractor* noun whose number differs
from the head's, so agreeing with the nearest noun gives the wrong answer:

* prepositional phrase -- "The uncles behind the dog";
* object relative clause -- "The farmer that the assistants admired";
* subject relative clause -- "The farmer that admired the assistants".

Relative clauses are complete and in the past tense: the past tense shows no number, so the only
agreement the question can ask about is the head's, and the next verb is unambiguously the main
verb. Head nouns (people) and attractors (people and animals) come from disjoint lists, so no
phrase repeats a noun.

Rows are balanced: singular and plural heads alternate (singular first), each in a seeded random
order. With 24 heads, 20 attractors, 10 prepositions and 12 relative-clause verbs each number
yields 16320 phrases; the table holds at most 32640 rows, and the default is 2000.
"""

import numpy as np
import pandas as pd

from caft.data.builtin._combinatorics import Template, balanced_choice, balanced_max, sample_balanced

DEFAULT_ROWS = 2000

PREFIX = "Choose the correct verb form for the following sentence: "

HEADS = (
    ("farmer", "farmers"),
    ("uncle", "uncles"),
    ("teacher", "teachers"),
    ("pilot", "pilots"),
    ("author", "authors"),
    ("senator", "senators"),
    ("surgeon", "surgeons"),
    ("mechanic", "mechanics"),
    ("lawyer", "lawyers"),
    ("dancer", "dancers"),
    ("student", "students"),
    ("officer", "officers"),
    ("painter", "painters"),
    ("banker", "bankers"),
    ("singer", "singers"),
    ("architect", "architects"),
    ("child", "children"),
    ("woman", "women"),
    ("man", "men"),
    ("customer", "customers"),
    ("neighbor", "neighbors"),
    ("manager", "managers"),
    ("baker", "bakers"),
    ("judge", "judges"),
)

ATTRACTORS = (
    ("dog", "dogs"),
    ("cat", "cats"),
    ("horse", "horses"),
    ("assistant", "assistants"),
    ("guard", "guards"),
    ("cousin", "cousins"),
    ("nurse", "nurses"),
    ("actor", "actors"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("clerk", "clerks"),
    ("tourist", "tourists"),
    ("player", "players"),
    ("driver", "drivers"),
    ("poet", "poets"),
    ("chef", "chefs"),
    ("soldier", "soldiers"),
    ("doctor", "doctors"),
    ("waiter", "waiters"),
    ("puppy", "puppies"),
)

VERB_PAIRS = (("does", "do"), ("is", "are"), ("goes", "go"), ("has", "have"))

_PREPOSITIONS = (
    "behind",
    "near",
    "beside",
    "next to",
    "in front of",
    "across from",
    "close to",
    "far from",
    "alongside",
    "with",
)

_CLAUSE_VERBS = (
    "admired",
    "helped",
    "saw",
    "met",
    "called",
    "visited",
    "followed",
    "trusted",
    "liked",
    "watched",
    "praised",
    "thanked",
)


def _stratum(head_number: int) -> tuple[Template, ...]:
    """All phrases whose head has ``head_number`` (0 singular, 1 plural), attractors the other."""
    heads = tuple(pair[head_number] for pair in HEADS)
    attractors = tuple(pair[1 - head_number] for pair in ATTRACTORS)
    return (
        Template(
            "The {head} {preposition} the {attractor}",
            {"head": heads, "preposition": _PREPOSITIONS, "attractor": attractors},
        ),
        Template(
            "The {head} that the {attractor} {verb}",
            {"head": heads, "attractor": attractors, "verb": _CLAUSE_VERBS},
        ),
        Template(
            "The {head} that {verb} the {attractor}",
            {"head": heads, "verb": _CLAUSE_VERBS, "attractor": attractors},
        ),
    )


_STRATA = (_stratum(0), _stratum(1))


def max_rows() -> int:
    """Largest table with as many singular as plural heads."""
    return balanced_max(_STRATA)


def generate(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """``rows`` distinct agreement questions, singular and plural heads alternating."""
    drawn = sample_balanced(rng, _STRATA, rows)
    forms = balanced_choice(rng, VERB_PAIRS, rows)
    return pd.DataFrame(
        [
            (PREFIX + phrase, form[number], form[1 - number])
            for (number, phrase), form in zip(drawn, forms, strict=True)
        ],
        columns=["question", "correct", "incorrect"],
    )
