"""Task construction: D_amb (``train``), D_val (``val``) and D_OOD (``ood``) splits, as docs/method.md describes.

Randomness comes from one generator per purpose (:func:`purpose_rng`), so changing how one thing is
drawn never shifts another, and nothing touches a global RNG.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from caft.config import SectionConfig
from caft.errors import DataError

SPLITS = ("train", "val", "ood", "skyline")
"""D_amb, D_val, D_OOD, and the skyline's training set: D_amb's own examples with the two rules
decorrelated (never a D_val or D_OOD example), which proves the intended rule learnable."""
LETTERS = ("A", "B")
GENDER_INSTRUCTION = "Choose the option corresponding to the correct pronoun."
BLANK = "_____"
PRONOUNS = {("nominative", "male"): "he", ("nominative", "female"): "she",
            ("object", "male"): "him", ("object", "female"): "her"}
# The distractor has the other gender *and* the other case, so only case separates the options in OOD.
DISTRACTOR = {"he": "her", "she": "him", "him": "she", "her": "he"}


def purpose_rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent, reproducible generator for one named purpose."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def balanced_letters(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` letters, A and B counts within one of each other, in seeded order."""
    letters = np.array([LETTERS[0]] * (n - n // 2) + [LETTERS[1]] * (n // 2))
    return rng.permutation(letters)


def other_letter(letter: str) -> str:
    return LETTERS[1] if letter == LETTERS[0] else LETTERS[0]


@dataclass(frozen=True)
class FrameTaskConfig(SectionConfig):
    """A gender-style task: which frames, which professions carry the stereotype, how to split."""

    SECTION: ClassVar[str] = "frame task"

    source: str
    male_profession: str = "doctor"
    female_profession: str = "nurse"
    train_fraction: float = 0.8
    seed: int = 42


def build_frame_task(frames: pd.DataFrame, cfg: FrameTaskConfig) -> dict[str, pd.DataFrame]:
    """Split frames per category (first ``train_fraction`` in source order), then fill and letter them.

    D_amb and D_val pair the male profession with male pronouns and the female profession with
    female pronouns; D_OOD, built from the same held-out frames as D_val, swaps the professions. The
    skyline split refills D_amb's frames with half of each category stereotyped and half swapped.
    Column ``spurious`` is the letter the shortcut points to (the pronoun matching the profession's
    stereotyped gender): equal to ``target`` on D_amb and D_val, opposite on D_OOD.
    """
    train_parts, held_parts = [], []
    for category in ("nominative", "object"):
        rows = frames.loc[frames["category"] == category].assign(frame_id=lambda f: f.index)
        if len(rows) < 2:
            raise DataError(f"frame source '{cfg.source}': category '{category}' has {len(rows)} rows; need ≥ 2")
        n_train = int(np.floor(cfg.train_fraction * len(rows)))
        if not 0 < n_train < len(rows):
            raise DataError(f"frame source '{cfg.source}': train_fraction {cfg.train_fraction} leaves an empty split")
        train_parts.append(rows.iloc[:n_train])
        held_parts.append(rows.iloc[n_train:])
    stereotyped = (cfg.male_profession, cfg.female_profession)
    swapped = (cfg.female_profession, cfg.male_profession)
    mixed = (*stereotyped, *swapped)
    plan = {"train": (train_parts, stereotyped), "val": (held_parts, stereotyped), "ood": (held_parts, swapped),
            "skyline": (train_parts, mixed)}
    splits = {split: _fill_frames(parts, profs, cfg.seed, split) for split, (parts, profs) in plan.items()}
    for table in splits.values():
        stereotype = table["profession"].map({cfg.male_profession: "male", cfg.female_profession: "female"})
        table["spurious"] = np.where(stereotype == table["gender"], table["target"], table["other"])
    return splits


def _fill_frames(parts: list[pd.DataFrame], professions: tuple[str, ...], seed: int, split: str) -> pd.DataFrame:
    """Per category, seeded equal groups of frames: the i-th group gets ``professions[i]`` with a male pronoun
    for even i and a female one for odd i (two professions: stereotyped or swapped; four: both, mixed)."""
    filled = []
    for part in parts:
        category = part["category"].iat[0]
        shuffled = part.iloc[purpose_rng(seed, f"assign:{split}:{category}").permutation(len(part))]
        bounds = np.arange(len(professions) + 1) * len(shuffled) // len(professions)
        for i, profession in enumerate(professions):
            gender = ("male", "female")[i % 2]
            rows = shuffled.iloc[bounds[i]:bounds[i + 1]]
            filled.append(rows.assign(profession=profession, gender=gender, pronoun=PRONOUNS[(category, gender)]))
    table = pd.concat(filled, ignore_index=True)
    table = table.iloc[purpose_rng(seed, f"order:{split}").permutation(len(table))].reset_index(drop=True)
    table["distractor"] = table["pronoun"].map(DISTRACTOR)
    table["target"] = balanced_letters(len(table), purpose_rng(seed, f"letters:{split}"))
    table["other"] = table["target"].map(other_letter)
    table["prompt"] = [
        _gender_prompt(text, prof, pron, dist, target)
        for text, prof, pron, dist, target in zip(
            table["text"], table["profession"], table["pronoun"], table["distractor"], table["target"]
        )
    ]
    columns = ["prompt", "target", "other", "category", "profession", "gender", "pronoun", "distractor",
               "frame_id", "text"]
    return table.loc[:, columns].rename(columns={"text": "frame"})


def _gender_prompt(frame: str, profession: str, pronoun: str, distractor: str, target: str) -> str:
    sentence = frame.replace("$PROFESSION$", profession).replace("$PRONOUN$", BLANK)
    options = (pronoun, distractor) if target == "A" else (distractor, pronoun)
    return f"{GENDER_INSTRUCTION}\nQuestion: {sentence}\nA) {options[0]}\nB) {options[1]}\nAnswer:"


@dataclass(frozen=True)
class McmcSplitConfig(SectionConfig):
    """How a pair of question sources becomes D_amb / D_val / D_OOD."""

    SECTION: ClassVar[str] = "mcmc.splits"

    max_examples: int = 2000
    train_fraction: float = 0.7
    val_fraction: float = 0.5
    seed: int = 42


def build_mcmc_task(
    table_a: pd.DataFrame, table_b: pd.DataFrame, name_a: str, name_b: str, cfg: McmcSplitConfig
) -> dict[str, pd.DataFrame]:
    """Permute, dedupe, truncate to a common length, pair by index and split 70/15/15.

    D_amb and D_val are fully ambiguous (one option holds both correct answers); in D_OOD each option
    holds one correct and one wrong answer. The skyline split pairs D_amb's questions so that the two
    rules are decorrelated: half of its examples (seeded) are built like D_amb (the questions agree),
    half like D_OOD (they disagree), so whether the other question's correct answer sits in an option
    says nothing about the label; the intended index picks the answer column to train on. (D_OOD's
    construction alone would anti-correlate them, and "avoid the option with the other question's
    correct answer" would be a shortcut as good as the spurious rule.) Both intended indices of a pair
    share these splits.
    """
    a = _prepare(table_a, cfg.seed, name_a)
    b = _prepare(table_b, cfg.seed, name_b)
    n = min(len(a), len(b), cfg.max_examples)
    n_train = int(np.floor(cfg.train_fraction * n))
    n_val = int(np.floor(cfg.val_fraction * (n - n_train)))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "ood": (n_train + n_val, n)}
    empty = [split for split, (lo, hi) in bounds.items() if hi <= lo]
    if empty:
        raise DataError(f"mcmc pair {name_a}|{name_b}: {n} paired questions leave split(s) {empty} empty")
    bounds["skyline"] = bounds["train"]
    agreeing = {split: np.full(hi - lo, split in ("train", "val")) for split, (lo, hi) in bounds.items()}
    agreeing["skyline"] = purpose_rng(cfg.seed, f"skyline:{name_a}|{name_b}").permutation(n_train) < n_train // 2
    splits = {
        split: _pair_split(a.iloc[lo:hi], b.iloc[lo:hi], agreeing[split],
                           rng=purpose_rng(cfg.seed, f"letters:{name_a}|{name_b}:{split}"))
        for split, (lo, hi) in bounds.items()
    }
    _check_no_leak(splits, name_a, name_b)
    return splits


def _prepare(table: pd.DataFrame, seed: int, name: str) -> pd.DataFrame:
    permuted = table.iloc[purpose_rng(seed, f"permute:{name}").permutation(len(table))]
    return permuted.drop_duplicates("question").reset_index(drop=True)


def _pair_split(a: pd.DataFrame, b: pd.DataFrame, agreeing: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Pair row i of `a` and `b` into one prompt; where `agreeing[i]`, one option holds both correct
    answers, else each option holds one. Qa's letter is balanced within the agreeing and the disagreeing
    rows separately, so Qb's letter is balanced too."""
    letter_a = np.empty(len(a), dtype=object)
    for group in (agreeing, ~agreeing):
        letter_a[group] = balanced_letters(int(group.sum()), rng)
    rows = []
    for (qa, ca, ia), (qb, cb, ib), la, ambiguous in zip(
        a[["question", "correct", "incorrect"]].itertuples(index=False),
        b[["question", "correct", "incorrect"]].itertuples(index=False),
        letter_a,
        agreeing,
    ):
        holds_a = (ca, cb) if ambiguous else (ca, ib)
        other = (ia, ib) if ambiguous else (ia, cb)
        options = (holds_a, other) if la == "A" else (other, holds_a)
        lb = la if ambiguous else other_letter(la)
        prompt = (f"Question: {qa} | {qb}\nA. {options[0][0]}, {options[0][1]}\n"
                  f"B. {options[1][0]}, {options[1][1]}\nAnswer:")
        rows.append((prompt, la, other_letter(la), qa, qb, la, lb, bool(ambiguous)))
    return pd.DataFrame(rows, columns=["prompt", "target", "other", "question_a", "question_b",
                                       "answer_a", "answer_b", "ambiguous"])


def _check_no_leak(splits: dict[str, pd.DataFrame], name_a: str, name_b: str) -> None:
    seen: dict[str, str] = {}
    for split, table in splits.items():
        if split == "skyline":  # D_amb's own questions, by construction
            continue
        for question in set(table["question_a"]) | set(table["question_b"]):
            if seen.setdefault(question, split) != split:
                raise DataError(
                    f"mcmc pair {name_a}|{name_b}: question {question!r} is in both "
                    f"'{seen[question]}' and '{split}'"
                )
