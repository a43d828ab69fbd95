"""Properties of the built-in source tables that the task builders rely on."""

import re

import numpy as np
import pandas as pd
import pytest

from caft.data.builtin import (
    BUILTIN_TABLES,
    gender,
    generate_source,
    pronouns,
    sentiment,
    sports,
    verbs,
)
from caft.data.builtin._combinatorics import Template, balanced_choice, sample_balanced
from caft.errors import DataError

MODULES = {
    "gender": gender,
    "verbs": verbs,
    "sentiment": sentiment,
    "sports": sports,
    "pronouns": pronouns,
}
COLUMNS = {"frames": ["text", "category"], "questions": ["question", "correct", "incorrect"]}
QUESTION_SOURCES = [name for name, kind in BUILTIN_TABLES.items() if kind == "questions"]


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    """Default-size tables, generated once per test module."""
    return {name: generate_source(name, seed=0) for name in BUILTIN_TABLES}


@pytest.fixture(scope="module")
def full_tables() -> dict[str, pd.DataFrame]:
    """Largest tables the grammars allow."""
    return {
        name: generate_source(name, seed=1, rows=module.max_rows())
        for name, module in MODULES.items()
    }


def key_column(name: str) -> str:
    """The column that identifies a row (must be unique)."""
    return COLUMNS[BUILTIN_TABLES[name]][0]


def test_registry_matches_modules() -> None:
    assert BUILTIN_TABLES == {
        "gender": "frames",
        "verbs": "questions",
        "sentiment": "questions",
        "sports": "questions",
        "pronouns": "questions",
    }


@pytest.mark.parametrize("name", list(BUILTIN_TABLES))
def test_schema_and_cleanliness(tables: dict[str, pd.DataFrame], name: str) -> None:
    table = tables[name]
    assert list(table.columns) == COLUMNS[BUILTIN_TABLES[name]]
    assert len(table) == MODULES[name].DEFAULT_ROWS
    assert list(table.index) == list(range(len(table)))
    for column in table.columns:
        assert pd.api.types.is_string_dtype(table[column])
        assert table[column].notna().all()
        values = table[column].tolist()
        assert all(isinstance(value, str) and value for value in values)
        assert all(value == value.strip() for value in values)
        assert not any("  " in value for value in values)


@pytest.mark.parametrize("name", list(BUILTIN_TABLES))
def test_no_duplicates_even_at_max_rows(full_tables: dict[str, pd.DataFrame], name: str) -> None:
    table = full_tables[name]
    assert len(table) == MODULES[name].max_rows()
    assert table[key_column(name)].is_unique


@pytest.mark.parametrize("name", list(BUILTIN_TABLES))
def test_deterministic_given_seed(name: str) -> None:
    first = generate_source(name, seed=7, rows=300)
    pd.testing.assert_frame_equal(first, generate_source(name, seed=7, rows=300))
    other = generate_source(name, seed=8, rows=300)
    assert first[key_column(name)].tolist() != other[key_column(name)].tolist()


@pytest.mark.parametrize("name", list(BUILTIN_TABLES))
def test_does_not_touch_global_rng(name: str) -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    generate_source(name, seed=0, rows=50)
    assert np.random.random() == expected


@pytest.mark.parametrize("name", list(BUILTIN_TABLES))
def test_max_rows_is_documented(name: str) -> None:
    module = MODULES[name]
    assert module.DEFAULT_ROWS <= module.max_rows()
    assert str(module.max_rows()) in module.__doc__
    assert str(module.DEFAULT_ROWS) in module.__doc__


def test_default_sizes() -> None:
    assert gender.DEFAULT_ROWS >= 800
    assert gender.max_rows() >= 1000
    for module in (verbs, sentiment, pronouns):
        assert module.DEFAULT_ROWS >= 2000
        assert module.max_rows() >= 2000
    assert sports.DEFAULT_ROWS == sports.max_rows() == 3 * 170


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError) as caught:
        generate_source("colors", seed=0)
    message = str(caught.value)
    assert "colors" in message
    assert all(name in message for name in BUILTIN_TABLES)


@pytest.mark.parametrize("name", list(BUILTIN_TABLES))
def test_too_many_rows_names_source_and_maximum(name: str) -> None:
    limit = MODULES[name].max_rows()
    with pytest.raises(DataError) as caught:
        generate_source(name, seed=0, rows=limit + 1)
    assert name in str(caught.value)
    assert str(limit) in str(caught.value)


def test_zero_rows_is_an_error() -> None:
    with pytest.raises(DataError, match="verbs"):
        generate_source("verbs", seed=0, rows=0)


def test_prefix_keeps_balance() -> None:
    table = generate_source("gender", seed=3, rows=101)
    assert table["category"].iloc[:100].value_counts().to_dict() == {
        "nominative": 50,
        "object": 50,
    }
    assert table["category"].iloc[100] == "nominative"


# gender


def test_gender_frames(full_tables: dict[str, pd.DataFrame]) -> None:
    table = full_tables["gender"]
    counts = table["category"].value_counts()
    assert set(counts.index) == {"nominative", "object"}
    assert counts["nominative"] == counts["object"] >= 400
    for text in table["text"]:
        assert text.count("$PROFESSION$") == 1
        assert text.count("$PRONOUN$") == 1
        assert "the $PROFESSION$" in text or text.startswith("The $PROFESSION$")
        assert text[0].isupper() and text.endswith(".")
    assert table["text"].str.startswith("The $PROFESSION$").any()
    assert (~table["text"].str.startswith("The $PROFESSION$")).any()


def test_gender_frames_carry_no_gender_words(full_tables: dict[str, pd.DataFrame]) -> None:
    gendered = {
        "he", "she", "him", "her", "his", "hers", "himself", "herself", "man", "woman", "men",
        "women", "boy", "girl", "husband", "wife", "mother", "father", "son", "daughter",
        "brother", "sister", "mr", "mrs", "ms", "male", "female", "lady", "gentleman",
    }  # fmt: skip
    for text in full_tables["gender"]["text"]:
        words = set(re.findall(r"[a-z]+", text.lower()))
        assert not words & gendered, text


FINITE_AFTER_SUBJECT = {
    "answered", "asked", "called", "cancelled", "checked", "could", "felt", "finished", "greeted",
    "had", "helped", "kept", "left", "made", "needed", "opened", "ordered", "read", "rested",
    "reviewed", "skipped", "smiled", "spoke", "stayed", "took", "updated", "wanted", "was", "went",
    "would",
}  # fmt: skip
CLAUSE_OPENERS = {"because", "so", "that", "then", "whether"}


def test_gender_pronoun_position_matches_case(full_tables: dict[str, pd.DataFrame]) -> None:
    """A nominative blank opens a clause and precedes its finite verb; an object blank does not."""
    table = full_tables["gender"]
    before = table["text"].str.extract(r"(\S+) \$PRONOUN\$")[0]
    after = table["text"].str.extract(r"\$PRONOUN\$ (\w+)")[0].fillna("")
    nominative = table["category"] == "nominative"
    assert set(after[nominative]) <= FINITE_AFTER_SUBJECT
    assert not set(after[~nominative]) & FINITE_AFTER_SUBJECT
    opens_clause = before.isin(CLAUSE_OPENERS) | before.str.endswith(",")
    assert opens_clause[nominative].mean() > 0.5
    assert not opens_clause[~nominative].any()


def test_gender_order_is_a_shuffle_within_category() -> None:
    table = generate_source("gender", seed=0)
    nominative = table["text"][table["category"] == "nominative"].tolist()
    reshuffled = generate_source("gender", seed=1)
    other = reshuffled["text"][reshuffled["category"] == "nominative"].tolist()
    assert nominative != other
    assert nominative != sorted(nominative)


# verbs


def test_verbs_agree_with_head(tables: dict[str, pd.DataFrame]) -> None:
    """The head's number decides ``correct``; the attractor always has the other number."""
    singular_heads = {singular for singular, _ in verbs.HEADS}
    plural_heads = {plural for _, plural in verbs.HEADS}
    singular_attractors = {singular for singular, _ in verbs.ATTRACTORS}
    plural_attractors = {plural for _, plural in verbs.ATTRACTORS}
    numbers = []
    for question, correct, incorrect in tables["verbs"].itertuples(index=False):
        assert question.startswith(verbs.PREFIX + "The ")
        words = question.removeprefix(verbs.PREFIX).split()
        head = words[1]
        assert head in singular_heads | plural_heads
        is_singular = head in singular_heads
        pair = (correct, incorrect) if is_singular else (incorrect, correct)
        assert pair in verbs.VERB_PAIRS
        attractor = next(w for w in words[2:] if w in singular_attractors | plural_attractors)
        assert (attractor in plural_attractors) == is_singular
        numbers.append(is_singular)
    assert numbers.count(True) == numbers.count(False)
    assert set(tables["verbs"]["correct"]) == {form for pair in verbs.VERB_PAIRS for form in pair}


def test_verbs_known_sample() -> None:
    table = generate_source("verbs", seed=0, rows=verbs.max_rows())
    by_phrase = table.set_index("question")
    assert by_phrase.loc[verbs.PREFIX + "The uncles behind the dog", "correct"] in {
        "do",
        "are",
        "go",
        "have",
    }
    assert by_phrase.loc[verbs.PREFIX + "The farmer that the assistants admired", "correct"] in {
        "does",
        "is",
        "goes",
        "has",
    }


def test_verbs_heads_and_attractors_are_disjoint() -> None:
    heads = {form for pair in verbs.HEADS for form in pair}
    attractors = {form for pair in verbs.ATTRACTORS for form in pair}
    assert not heads & attractors


# sentiment


def test_sentiment_labels(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["sentiment"]
    assert table["question"].str.startswith(sentiment.PREFIX).all()
    assert set(table["correct"]) == {"positive", "negative"}
    assert (table["correct"] != table["incorrect"]).all()
    assert set(table["incorrect"]) == {"positive", "negative"}
    assert 0.4 <= (table["correct"] == "positive").mean() <= 0.6
    negated = table["question"].str.contains(r"\bnot\b")
    assert negated.any()
    assert set(table.loc[negated, "correct"]) == {"positive", "negative"}


def test_sentiment_negation_flips_polarity() -> None:
    table = generate_source("sentiment", seed=0, rows=sentiment.max_rows()).set_index("question")
    assert table.loc[sentiment.PREFIX + "The film was not boring at all.", "correct"] == "positive"
    assert table.loc[sentiment.PREFIX + "The film was not good at all.", "correct"] == "negative"
    assert table.loc[sentiment.PREFIX + "The hotel was truly dreadful.", "correct"] == "negative"


# sports


def test_sports_answers(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["sports"]
    allowed = set(sports.SPORTS)
    assert allowed == {"baseball", "basketball", "football"}
    assert set(table["correct"]) == allowed
    assert set(table["incorrect"]) <= allowed
    assert (table["correct"] != table["incorrect"]).all()
    assert table["question"].str.fullmatch(r"\S.* is known for playing").all()
    assert table["correct"].value_counts().nunique() == 1


def test_sports_known_athletes(tables: dict[str, pd.DataFrame]) -> None:
    answers = dict(zip(tables["sports"]["question"], tables["sports"]["correct"], strict=True))
    assert answers["Babe Ruth is known for playing"] == "baseball"
    assert answers["LeBron James is known for playing"] == "basketball"
    assert answers["Tom Brady is known for playing"] == "football"
    names = [name for group in sports.athletes().values() for name in group]
    assert len(names) == len(set(names))


def test_sports_wrong_answer_varies(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["sports"]
    baseball = table[table["correct"] == "baseball"]
    assert set(baseball["incorrect"]) == {"basketball", "football"}


# pronouns


def test_pronouns_case(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["pronouns"]
    assert set(table["correct"]) == {"he", "she", "they"}
    assert set(table["incorrect"]) == {"him", "her", "them"}
    assert table["correct"].value_counts().max() - table["correct"].value_counts().min() <= 1
    assert (table["question"].str.count("_") == 1).all()
    assert table["question"].str.contains(r"(?:^|\s)_ ").all()
    assert table["question"].str.endswith(".").all()
    after_blank = table["question"].str.extract(r" _ (\w+)")[0]
    assert set(after_blank) <= {
        "could",
        "would",
        "might",
        "should",
        "had",
        "wanted",
        "agreed",
        "decided",
    }


# shared helpers


def test_sample_balanced_interleaves_strata() -> None:
    strata = [
        [Template("a{x}", {"x": ("1", "2", "3")})],
        [Template("b{x}{y}", {"x": ("1", "2"), "y": ("1", "2")})],
    ]
    drawn = sample_balanced(np.random.default_rng(0), strata, 6)
    assert [stratum for stratum, _ in drawn] == [0, 1, 0, 1, 0, 1]
    assert sorted(text for stratum, text in drawn if stratum == 0) == ["a1", "a2", "a3"]
    assert len({text for _, text in drawn}) == 6


def test_balanced_choice_counts() -> None:
    chosen = balanced_choice(np.random.default_rng(0), ("x", "y", "z"), 10)
    assert sorted(chosen.count(option) for option in "xyz") == [3, 3, 4]
