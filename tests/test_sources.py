"""Source tables from a local directory and from a dataset id; every bad input is a clear error."""

import pandas as pd
import pytest

from caft.data.sources import load_source
from caft.errors import ConfigError, DataError
from tests.config_helpers import check_section

QUESTIONS = pd.DataFrame(
    {
        "question": ["Q one", "Q two", "Q one", "Q three"],
        "correct": ["yes", "no", "yes", "yes"],
        "incorrect": ["no", "yes", "no", "no"],
        "extra": [1, 2, 3, 4],
    }
)
FRAMES = pd.DataFrame(
    {
        "text": ["The $PROFESSION$ said $PRONOUN$ was late.", "We thanked the $PROFESSION$ and paid $PRONOUN$."],
        "category": ["nominative", "object"],
    }
)


def write(frame: pd.DataFrame, path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_local_directory_in_every_format_drops_duplicates_and_extra_columns(tmp_path, fmt, caplog):
    write(QUESTIONS, tmp_path / "raw" / f"verbs.{fmt}", fmt)
    with caplog.at_level("INFO"):
        table = load_source("verbs", {"from": "local", "path": "raw"}, "questions", base_dir=tmp_path)
    assert list(table.columns) == ["question", "correct", "incorrect"]
    assert table["question"].tolist() == ["Q one", "Q two", "Q three"]
    assert "dropped 1 duplicate" in caplog.text


def test_local_file_stem_can_differ_from_the_source_name(tmp_path):
    write(FRAMES, tmp_path / "gender_frames.csv", "csv")
    table = load_source("gender", {"from": "local", "path": ".", "file": "gender_frames"}, "frames", tmp_path)
    assert table["category"].tolist() == ["nominative", "object"]


def test_missing_local_file_names_the_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"sports.csv, sports.parquet, sports.jsonl"):
        load_source("sports", {"from": "local", "path": "."}, "questions", tmp_path)


def test_missing_column_names_table_and_column(tmp_path):
    write(QUESTIONS.drop(columns="incorrect"), tmp_path / "verbs.csv", "csv")
    with pytest.raises(DataError, match=r"verbs.csv: missing column\(s\) \['incorrect'\]"):
        load_source("verbs", {"from": "local", "path": "."}, "questions", tmp_path)


def test_empty_table_is_an_error(tmp_path):
    (tmp_path / "verbs.csv").write_text("question,correct,incorrect\n")
    with pytest.raises(DataError, match="empty"):
        load_source("verbs", {"from": "local", "path": "."}, "questions", tmp_path)


def test_wrong_category_names_the_row(tmp_path):
    bad = FRAMES.assign(category=["nominative", "accusative"])
    write(bad, tmp_path / "gender.csv", "csv")
    with pytest.raises(DataError, match=r"row 1 has category 'accusative'"):
        load_source("gender", {"from": "local", "path": "."}, "frames", tmp_path)


def test_frame_without_placeholder_names_the_row(tmp_path):
    bad = FRAMES.assign(text=["The $PROFESSION$ said $PRONOUN$ was late.", "No placeholders here."])
    write(bad, tmp_path / "gender.csv", "csv")
    with pytest.raises(DataError, match=r"row 1 must contain \$PROFESSION\$"):
        load_source("gender", {"from": "local", "path": "."}, "frames", tmp_path)


def test_blank_value_names_row_and_column(tmp_path):
    bad = QUESTIONS.copy()
    bad.loc[2, "correct"] = None
    write(bad, tmp_path / "verbs.parquet", "parquet")
    with pytest.raises(DataError, match=r"row 2 has an empty value in column 'correct'"):
        load_source("verbs", {"from": "local", "path": "."}, "questions", tmp_path)


def test_unknown_origin_is_a_config_error():
    with pytest.raises(ConfigError, match=r"key 'sources.verbs.from': 'ftp' is not one of \['builtin', 'local', "
                                          r"'huggingface'\]"):
        check_section("sources.verbs", {"from": "ftp"})


def test_huggingface_route_uses_load_dataset_on_a_local_dataset_directory(tmp_path, offline_datasets):
    write(QUESTIONS, tmp_path / "ds" / "train.csv", "csv")
    table = load_source("verbs", {"from": "huggingface", "dataset": str(tmp_path / "ds"), "split": "train"},
                        "questions")
    assert table["question"].tolist() == ["Q one", "Q two", "Q three"]


def test_unreachable_dataset_id_suggests_a_local_source(offline_datasets):
    with pytest.raises(DataError, match=r"could not load Hugging Face dataset 'nobody/nothing'.*from: local"):
        load_source("verbs", {"from": "huggingface", "dataset": "nobody/nothing"}, "questions")

