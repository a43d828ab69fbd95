"""Evaluation questions in the public EM format, their sampling plan, and the generic chat prompts.

A questions file is the YAML list of Betley et al.'s ``first_plot_questions.yaml``: entries with
``id``, ``paraphrases``, ``samples_per_paraphrase``, ``system``, ``type``, ``judge`` and
``judge_prompts``. Other keys are tolerated, since the public files carry more; the known ones are
type-checked so that a typo fails here, naming the entry, rather than during sampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from caft.errors import ConfigError, DataError

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_QUESTIONS = DATA_DIR / "questions.yaml"
BUILTIN_CHAT_PROMPTS = DATA_DIR / "chat_prompts.yaml"
DEFAULT_SAMPLES = 1
"""Samples per paraphrase when neither the file nor the caller sets it."""
PLAN_COLUMNS = ["question_id", "paraphrase_index", "sample_index", "prompt", "system"]


@dataclass(frozen=True)
class Question:
    """One evaluation question: each paraphrase is sampled `samples_per_paraphrase` times."""

    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int
    system: str | None


def load_questions(path: str | Path, samples_per_paraphrase: int | None = None) -> list[Question]:
    """The questions of `path`; `samples_per_paraphrase`, when given, overrides every entry's value."""
    if samples_per_paraphrase is not None and not _positive_int(samples_per_paraphrase):
        raise ConfigError(f"samples_per_paraphrase must be a positive integer, got {samples_per_paraphrase!r}")
    entries = _read_yaml(path)
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected a non-empty list of questions")
    questions = [_question(entry, f"{path}: question #{index}", samples_per_paraphrase)
                 for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for question in questions:
        if question.id in seen:
            raise DataError(f"{path}: duplicate question id {question.id!r}")
        seen.add(question.id)
    return questions


def _question(entry: Any, where: str, samples_override: int | None) -> Question:
    if not isinstance(entry, Mapping):
        raise DataError(f"{where}: expected a mapping with 'id' and 'paraphrases'")
    if not isinstance(entry.get("id"), str) or not entry["id"]:
        raise DataError(f"{where}: key 'id' must be a non-empty string, got {entry.get('id')!r}")
    where = f"{where} ({entry['id']})"
    paraphrases = entry.get("paraphrases")
    if not isinstance(paraphrases, list) or not paraphrases or not all(_text(p) for p in paraphrases):
        raise DataError(f"{where}: key 'paraphrases' must be a non-empty list of non-empty strings")
    samples = entry.get("samples_per_paraphrase", DEFAULT_SAMPLES)
    if not _positive_int(samples):
        raise DataError(f"{where}: key 'samples_per_paraphrase' must be a positive integer, got {samples!r}")
    system = entry.get("system")
    if system is not None and not isinstance(system, str):
        raise DataError(f"{where}: key 'system' must be a string or null, got {type(system).__name__}")
    for key in ("type", "judge"):
        if key in entry and not _text(entry[key]):
            raise DataError(f"{where}: key '{key}' must be a non-empty string, got {entry[key]!r}")
    prompts = entry.get("judge_prompts", {})
    if not isinstance(prompts, Mapping) or not all(isinstance(k, str) and _text(v) for k, v in prompts.items()):
        raise DataError(f"{where}: key 'judge_prompts' must map names to non-empty strings")
    return Question(entry["id"], tuple(paraphrases), samples_override or samples, system)


def sampling_plan(questions: Sequence[Question]) -> pd.DataFrame:
    """One row per sample to draw, ordered by question, paraphrase, then sample index."""
    rows = [
        (question.id, p_index, s_index, paraphrase, question.system)
        for question in questions
        for p_index, paraphrase in enumerate(question.paraphrases)
        for s_index in range(question.samples_per_paraphrase)
    ]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def load_chat_prompts(path: str | Path) -> list[str]:
    """Generic chat prompts (a YAML list of distinct non-empty strings)."""
    prompts = _read_yaml(path)
    if not isinstance(prompts, list) or not prompts:
        raise DataError(f"{path}: expected a non-empty list of prompts")
    for index, prompt in enumerate(prompts):
        if not _text(prompt):
            raise DataError(f"{path}: prompt #{index} must be a non-empty string, got {prompt!r}")
        if prompt in prompts[:index]:
            raise DataError(f"{path}: prompt #{index} repeats an earlier one: {prompt!r}")
    return prompts


def _read_yaml(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as err:
        raise DataError(f"{path}: cannot be read: {err}") from err
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML: {err}") from err


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
