"""Built-in ``pronouns`` source: a blank where only a subject pronoun is grammatical.

Each ``question`` is a sentence about a customer and a tradesperson with one ``_`` blank, e.g.
"The client told the floor installer to arrive early so that _ could start the work."; ``correct``
is a subject pronoun (he, she or they) and ``incorrect`` an object pronoun (him, her or them). As
in the paper, the right answer is always the subject form and the wrong one always the object
form; both are seeded, balanced choices per row, independent of each other, so gender and number
vary while grammatical case alone decides the answer.

Why every sentence works with all three subject pronouns: the blank is the subject of a clause and
is followed by a modal or a past-tense verb (could, would, might, should, had, wanted, agreed,
decided), which show no person or number, so "they" is as right as "he" or "she"; and it is never
followed by a noun, so "her" cannot be read as a possessive. Who the pronoun refers to does not
matter for the answer.

Sentences are the product of 10 frames, 12 customers, 25 trades and 12 purposes: 36000 distinct
sentences, the maximum; the default is 2000, in a seeded random order.
"""

import numpy as np
import pandas as pd

from caft.data.builtin._combinatorics import Template, balanced_choice, sample_stratum, stratum_size

DEFAULT_ROWS = 2000

SUBJECT = ("he", "she", "they")
OBJECT = ("him", "her", "them")

_CUSTOMERS = (
    "client",
    "customer",
    "manager",
    "homeowner",
    "landlord",
    "supervisor",
    "tenant",
    "shop owner",
    "architect",
    "project lead",
    "property manager",
    "school principal",
)

_TRADES = (
    "floor installer",
    "plumber",
    "electrician",
    "painter",
    "carpenter",
    "roofer",
    "gardener",
    "mechanic",
    "locksmith",
    "window cleaner",
    "tile setter",
    "welder",
    "contractor",
    "interior designer",
    "surveyor",
    "repair technician",
    "mover",
    "builder",
    "decorator",
    "landscaper",
    "glazier",
    "bricklayer",
    "cabinet maker",
    "chimney sweep",
    "pest inspector",
)

_PURPOSES = (
    "start the work",
    "check the measurements",
    "order the materials",
    "finish the job",
    "bring the right tools",
    "review the plans",
    "discuss the price",
    "inspect the site",
    "fix the problem",
    "sign the contract",
    "go over the details",
    "write up a quote",
)

_FRAMES = (
    "The {customer} told the {trade} to arrive early so that _ could {purpose}.",
    "The {customer} paid the {trade} in advance so that _ could {purpose}.",
    "The {trade} called the {customer} because _ wanted to {purpose}.",
    "The {customer} reminded the {trade} that _ had promised to {purpose}.",
    "The {customer} emailed the {trade} to ask whether _ could {purpose} next week.",
    "When the {customer} phoned the {trade}, _ agreed to {purpose}.",
    "The {trade} met the {customer} on Monday, and afterwards _ decided to {purpose}.",
    "The {customer} gave the {trade} a key so that _ would be able to {purpose}.",
    "The {trade} texted the {customer} to say that _ might {purpose} later.",
    "The {customer} and the {trade} agreed that _ should {purpose} first.",
)

_TEMPLATES = tuple(
    Template(frame, {"customer": _CUSTOMERS, "trade": _TRADES, "purpose": _PURPOSES})
    for frame in _FRAMES
)


def max_rows() -> int:
    """Number of distinct sentences the frames and word lists allow."""
    return stratum_size(_TEMPLATES)


def generate(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """``rows`` distinct sentences with a subject pronoun right and an object pronoun wrong."""
    return pd.DataFrame(
        {
            "question": sample_stratum(rng, _TEMPLATES, rows),
            "correct": balanced_choice(rng, SUBJECT, rows),
            "incorrect": balanced_choice(rng, OBJECT, rows),
        }
    )
