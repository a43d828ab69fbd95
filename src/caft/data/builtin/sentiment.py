"""Built-in ``sentiment`` source: short review-like sentences with an unambiguous polarity.

Each ``question`` is "What is the sentiment of the following sentence? " followed by a sentence
about a reviewed thing (film, meal, hotel, book, concert, ...); ``correct`` is its label and
``incorrect`` the other one, from {positive, negative}.

Sentences come from three structures per label, so the label is not tied to one surface form:

* intensified adjective -- "The hotel was truly wonderful." / "The hotel was truly dreadful.";
* negated adjective of the opposite polarity, closed by "at all" so the negation is emphatic
  rather than hedged -- "The film was not boring at all." (positive) / "The film was not enjoyable
  at all." (negative);
* an experiencer's verdict -- "My friends adored the concert." / "We did not enjoy the concert."

Adjectives are strongly polar (no "okay", "fine", "interesting but long"), and the negated ones are
the mild words whose negation reads as clear praise or clear criticism, so every sentence has one
obviously right label.

Rows are balanced: positive and negative alternate (positive first), each in a seeded random
order. With 24 subjects each label yields 2448 sentences; the table holds at most 4896 rows, and
the default is 2000.
"""

import numpy as np
import pandas as pd

from caft.data.builtin._combinatorics import Template, balanced_max, sample_balanced

DEFAULT_ROWS = 2000

PREFIX = "What is the sentiment of the following sentence? "

LABELS = ("positive", "negative")

_SUBJECTS = (
    "film",
    "movie",
    "meal",
    "hotel",
    "book",
    "concert",
    "play",
    "restaurant",
    "album",
    "show",
    "novel",
    "dinner",
    "trip",
    "museum",
    "bakery",
    "documentary",
    "performance",
    "lecture",
    "festival",
    "musical",
    "series",
    "podcast",
    "game",
    "exhibition",
)

_INTENSIFIERS = ("really", "truly", "absolutely", "incredibly", "genuinely", "simply")

_EXPERIENCERS = ("I", "We", "My friends", "My colleagues", "My family", "The critics")


def _stratum(
    strong: tuple[str, ...], negated: tuple[str, ...], verdicts: tuple[str, ...]
) -> tuple[Template, ...]:
    """The three sentence structures of one label."""
    return (
        Template(
            "The {subject} was {intensifier} {adjective}.",
            {"subject": _SUBJECTS, "intensifier": _INTENSIFIERS, "adjective": strong},
        ),
        Template(
            "The {subject} was not {adjective} at all.",
            {"subject": _SUBJECTS, "adjective": negated},
        ),
        Template(
            "{experiencer} {verdict} the {subject}.",
            {"experiencer": _EXPERIENCERS, "verdict": verdicts, "subject": _SUBJECTS},
        ),
    )


POSITIVE = _stratum(
    strong=(
        "wonderful",
        "delightful",
        "fantastic",
        "excellent",
        "superb",
        "amazing",
        "brilliant",
        "charming",
        "impressive",
        "enjoyable",
    ),
    negated=("boring", "dull", "disappointing", "bad", "tedious", "unpleasant"),
    verdicts=("loved", "enjoyed", "adored", "really liked", "thoroughly enjoyed", "raved about"),
)

NEGATIVE = _stratum(
    strong=(
        "awful",
        "terrible",
        "dreadful",
        "boring",
        "disappointing",
        "dull",
        "horrible",
        "unpleasant",
        "tedious",
        "dismal",
    ),
    negated=("good", "enjoyable", "pleasant", "fun", "interesting", "worth the money"),
    verdicts=(
        "hated",
        "disliked",
        "really disliked",
        "could not stand",
        "complained about",
        "did not enjoy",
    ),
)

_STRATA = (POSITIVE, NEGATIVE)


def max_rows() -> int:
    """Largest table with as many positive as negative sentences."""
    return balanced_max(_STRATA)


def generate(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """``rows`` distinct labelled sentences, positive and negative alternating."""
    drawn = sample_balanced(rng, _STRATA, rows)
    return pd.DataFrame(
        [(PREFIX + sentence, LABELS[label], LABELS[1 - label]) for label, sentence in drawn],
        columns=["question", "correct", "incorrect"],
    )
