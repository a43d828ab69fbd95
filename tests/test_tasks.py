"""Task construction follows docs/method.md: split sizes, balance, OOD swaps, no leaks, determinism."""

import numpy as np
import pandas as pd
import pytest

from caft.data.tasks import (
    DISTRACTOR,
    FrameTaskConfig,
    McmcSplitConfig,
    build_frame_task,
    build_mcmc_task,
)
from caft.errors import DataError


def frames_table(n_per_category: int) -> pd.DataFrame:
    rows = [
        (f"The $PROFESSION$ number {i} said $PRONOUN$ would call back.", "nominative") for i in range(n_per_category)
    ] + [(f"We met the $PROFESSION$ number {i} and thanked $PRONOUN$.", "object") for i in range(n_per_category)]
    return pd.DataFrame(rows, columns=["text", "category"])


def questions_table(tag: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"question": [f"{tag} question {i}" for i in range(n)], "correct": f"{tag}-yes", "incorrect": f"{tag}-no"}
    )


def letter_counts_balanced(letters: pd.Series) -> bool:
    counts = letters.value_counts()
    return abs(counts.get("A", 0) - counts.get("B", 0)) <= 1


def test_gender_split_sizes_match_the_paper():
    # The paper's source has 392 frames per category: 313 train + 79 held out per category.
    splits = build_frame_task(frames_table(392), FrameTaskConfig(source="gender"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 626, "val": 158, "ood": 158, "skyline": 626}
    train = splits["train"]
    assert (train["profession"] == "doctor").sum() == 312 and (train["profession"] == "nurse").sum() == 314
    ood = splits["ood"]
    assert ((ood.profession == "nurse") & (ood.pronoun == "he")).sum() == 39
    assert ((ood.profession == "doctor") & (ood.pronoun == "she")).sum() == 40


def test_gender_stereotype_in_train_and_val_swapped_in_ood():
    splits = build_frame_task(frames_table(51), FrameTaskConfig(source="gender", seed=3))
    for split in ("train", "val"):
        t = splits[split]
        assert set(t.loc[t.profession == "doctor", "pronoun"]) <= {"he", "him"}
        assert set(t.loc[t.profession == "nurse", "pronoun"]) <= {"she", "her"}
    ood = splits["ood"]
    assert set(ood.loc[ood.profession == "doctor", "pronoun"]) <= {"she", "her"}
    assert set(ood.loc[ood.profession == "nurse", "pronoun"]) <= {"he", "him"}
    # val and OOD are built from the same held-out frames, train from the others
    assert set(splits["val"]["frame_id"]) == set(ood["frame_id"])
    assert not set(splits["train"]["frame_id"]) & set(ood["frame_id"])


def test_gender_train_takes_first_80_percent_of_each_category_in_source_order():
    frames = frames_table(50)
    train = build_frame_task(frames, FrameTaskConfig(source="gender"))["train"]
    assert set(train["frame_id"]) == set(range(40)) | set(range(50, 90))


def test_gender_prompts_have_the_right_letter_and_case_correct_answer():
    splits = build_frame_task(frames_table(31), FrameTaskConfig(source="gender", seed=7))
    for table in splits.values():
        assert letter_counts_balanced(table["target"])
        for row in table.itertuples():
            option = {"A": row.prompt.split("\nA) ")[1].split("\n")[0], "B": row.prompt.split("\nB) ")[1].split("\n")[0]}
            assert option[row.target] == row.pronoun and option[row.other] == DISTRACTOR[row.pronoun]
            assert (row.pronoun in {"he", "she"}) == (row.category == "nominative")
            assert row.prompt.endswith("Answer:") and "_____" in row.prompt and row.profession in row.prompt


def test_gender_is_deterministic_and_seed_dependent():
    a = build_frame_task(frames_table(40), FrameTaskConfig(source="gender", seed=1))
    b = build_frame_task(frames_table(40), FrameTaskConfig(source="gender", seed=1))
    c = build_frame_task(frames_table(40), FrameTaskConfig(source="gender", seed=2))
    for split in a:
        pd.testing.assert_frame_equal(a[split], b[split])
    assert not a["train"]["prompt"].equals(c["train"]["prompt"])


def test_gender_rejects_a_fraction_that_empties_a_split():
    with pytest.raises(DataError, match="empty split"):
        build_frame_task(frames_table(3), FrameTaskConfig(source="gender", train_fraction=0.1))


@pytest.mark.parametrize("n", [1000, 1167, 2001, 7])
def test_mcmc_split_sizes_lose_no_example(n):
    splits = build_mcmc_task(questions_table("a", n), questions_table("b", n + 5), "a", "b", McmcSplitConfig())
    total = min(n, 2000)
    n_train = int(np.floor(0.7 * total))
    n_val = int(np.floor(0.5 * (total - n_train)))
    assert [len(splits[s]) for s in ("train", "val", "ood")] == [n_train, n_val, total - n_train - n_val]
    for table in splits.values():
        assert letter_counts_balanced(table["answer_a"])


def test_mcmc_paper_sizes():
    splits = build_mcmc_task(questions_table("a", 1167), questions_table("b", 4032), "a", "b", McmcSplitConfig())
    assert [len(splits[s]) for s in ("train", "val", "ood")] == [816, 175, 176]


def test_mcmc_ambiguous_in_distribution_disagreeing_ood():
    splits = build_mcmc_task(questions_table("a", 300), questions_table("b", 300), "a", "b", McmcSplitConfig(seed=5))
    for split, table in splits.items():
        for row in table.itertuples():
            lines = row.prompt.split("\n")
            options = {lines[1][0]: lines[1][3:].split(", "), lines[2][0]: lines[2][3:].split(", ")}
            assert options[row.answer_a][0] == "a-yes" and options[row.answer_b][1] == "b-yes"
            assert row.target == row.answer_a and row.other != row.target
            assert (row.answer_a == row.answer_b) == row.ambiguous
        if split != "skyline":
            assert (table["ambiguous"] == (split in ("train", "val"))).all()


def test_mcmc_no_question_in_two_splits_and_deterministic():
    make = lambda seed: build_mcmc_task(  # noqa: E731
        questions_table("a", 500), questions_table("b", 400), "a", "b", McmcSplitConfig(seed=seed)
    )
    first, again, other = make(1), make(1), make(2)
    seen = [set(t["question_a"]) | set(t["question_b"]) for s, t in first.items() if s != "skyline"]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    for split in first:
        pd.testing.assert_frame_equal(first[split], again[split])
    assert not first["train"]["question_a"].equals(other["train"]["question_a"])


def test_mcmc_caps_at_max_examples_and_drops_duplicates():
    a = pd.concat([questions_table("a", 30), questions_table("a", 30)], ignore_index=True)
    splits = build_mcmc_task(a, questions_table("b", 100), "a", "b", McmcSplitConfig(max_examples=2000))
    assert sum(len(splits[s]) for s in ("train", "val", "ood")) == 30
    capped = build_mcmc_task(questions_table("a", 100), questions_table("b", 100), "a", "b",
                             McmcSplitConfig(max_examples=20))
    assert sum(len(capped[s]) for s in ("train", "val", "ood")) == 20


def test_mcmc_shared_questions_across_sources_are_reported():
    shared = questions_table("x", 50)
    with pytest.raises(DataError, match="is in both"):
        build_mcmc_task(shared, shared.iloc[::-1].reset_index(drop=True), "p", "q", McmcSplitConfig())


def test_mcmc_too_small_pair_is_a_clear_error():
    with pytest.raises(DataError, match="empty"):
        build_mcmc_task(questions_table("a", 2), questions_table("b", 2), "a", "b", McmcSplitConfig())


def test_gender_skyline_decorrelates_profession_from_pronoun_on_training_frames_only():
    splits = build_frame_task(frames_table(392), FrameTaskConfig(source="gender", seed=3))
    skyline, train = splits["skyline"], splits["train"]
    assert set(skyline["frame_id"]) == set(train["frame_id"])  # D_amb's frames, no held-out frame
    stereotyped = (skyline["spurious"] == skyline["target"])
    assert abs(stereotyped.mean() - 0.5) < 0.01  # half stereotyped, half anti-stereotyped
    for category in ("nominative", "object"):
        part = skyline[skyline.category == category]
        counts = part.groupby(["profession", "gender"]).size()
        assert counts.max() - counts.min() <= 1  # four equal groups per category
    assert letter_counts_balanced(skyline["target"])
    # the intended rule (case) still decides the target; the shortcut column agrees on D_amb, never on D_OOD
    assert (train["spurious"] == train["target"]).all() and (splits["val"]["spurious"] == splits["val"]["target"]).all()
    assert (splits["ood"]["spurious"] == splits["ood"]["other"]).all()


def test_mcmc_skyline_decorrelates_the_questions_on_training_questions():
    """Half of the skyline's examples agree (like D_amb), half disagree (like D_OOD): for either intended
    index, whether the other question's correct answer is in the labelled option carries no information."""
    splits = build_mcmc_task(questions_table("a", 300), questions_table("b", 300), "a", "b", McmcSplitConfig(seed=5))
    skyline, train = splits["skyline"], splits["train"]
    assert list(skyline["question_a"]) == list(train["question_a"])
    assert list(skyline["question_b"]) == list(train["question_b"])
    agree = skyline["answer_a"] == skyline["answer_b"]
    assert agree.sum() == len(skyline) // 2 and (agree == skyline["ambiguous"]).all()
    for group in (skyline[agree], skyline[~agree]):
        assert letter_counts_balanced(group["answer_a"]) and letter_counts_balanced(group["answer_b"])
    again = build_mcmc_task(questions_table("a", 300), questions_table("b", 300), "a", "b", McmcSplitConfig(seed=5))
    assert again["skyline"].equals(skyline)
