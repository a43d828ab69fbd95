"""The large literal tables live in package data files: each loads to its documented size, and each file
matches a ``[tool.setuptools.package-data]`` glob, so an installed wheel carries it."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path, PurePosixPath

import pytest

from caft.data.builtin import sports
from caft.data.corpus import PROMPTS_FILE, generation_prompts
from caft.em import advicegen
from caft.em.codegen import TEMPLATES_FILE, CodeTask, code_tasks, openers

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
DATA_FILES = [
    ("caft.data.builtin", sports.ATHLETES_FILE),
    ("caft.data", PROMPTS_FILE),
    ("caft.em", f"data/{TEMPLATES_FILE}"),
    ("caft.em", f"data/{advicegen.TEMPLATES_FILE}"),
]


def package_data_globs() -> list[str]:
    """The ``caft`` package-data patterns of pyproject.toml (relative to ``src/caft``)."""
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)["tool"]["setuptools"]["package-data"]["caft"]


def matches(path: PurePosixPath, glob: str) -> bool:
    """Whether setuptools' `glob` takes `path` (a whole-path match: ``*`` stays within one folder)."""
    return len(path.parts) == len(PurePosixPath(glob).parts) and path.match(glob)


@pytest.mark.parametrize(("package", "name"), DATA_FILES)
def test_data_file_is_shipped(package: str, name: str) -> None:
    assert files(package).joinpath(name).is_file()
    relative = PurePosixPath(*package.split(".")[1:], name)
    assert any(matches(relative, glob) for glob in package_data_globs()), relative


def test_athletes_load_to_170_per_sport() -> None:
    athletes = sports.athletes()
    assert tuple(athletes) == sports.SPORTS
    assert [len(names) for names in athletes.values()] == [170, 170, 170]
    assert athletes["baseball"][0] == "Babe Ruth"
    assert sports.DEFAULT_ROWS == sports.max_rows() == 510


def test_generation_prompts_load_in_order() -> None:
    prompts = generation_prompts()
    assert len(prompts) == 89
    assert prompts[0] == "Breaking news: officials confirmed on Tuesday that"
    assert any("\n" in prompt for prompt in prompts)  # multi-line prompts survive the file format


def test_code_templates_load() -> None:
    tasks = code_tasks()
    assert len(openers()) == 4 and len(tasks) == 13
    assert all(isinstance(task, CodeTask) for task in tasks)
    joint = [key for task in tasks for key in task.slots if isinstance(key, tuple)]
    assert joint == [("table", "column")]
    assert all(not task.secure.startswith((" ", "\n")) for task in tasks)


def test_advice_templates_load() -> None:
    tasks = advicegen.advice_tasks()
    assert len(advicegen.openers()) == 6 and len(tasks) == 18
    assert all(isinstance(task, advicegen.AdviceTask) for task in tasks)
    assert all(task.risky == task.risky.strip() and task.sound == task.sound.strip() for task in tasks)
