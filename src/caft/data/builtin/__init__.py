"""Offline generator of the source tables, the default data source of the workflow.

The built-in tables follow the public schema of the paper's datasets (``gender``: ``text``,
``category``; the others: ``question``, ``correct``, ``incorrect``) and are built from word lists
and sentence templates in this package, so the workflow runs without network access. Each table
is a deterministic function of (name, seed, rows): all randomness comes from one
``numpy.random.default_rng(seed)``. How each source is built, and why, is documented in its module.
"""

from types import ModuleType

import numpy as np
import pandas as pd

from caft.data.builtin import gender, pronouns, sentiment, sports, verbs
from caft.errors import DataError

BUILTIN_TABLES: dict[str, str] = {
    "gender": "frames",
    "verbs": "questions",
    "sentiment": "questions",
    "sports": "questions",
    "pronouns": "questions",
}

_MODULES: dict[str, ModuleType] = {
    "gender": gender,
    "verbs": verbs,
    "sentiment": sentiment,
    "sports": sports,
    "pronouns": pronouns,
}


def generate_source(name: str, seed: int, rows: int | None = None) -> pd.DataFrame:
    """The built-in source table ``name`` with ``rows`` distinct rows (its default if None)."""
    module = _MODULES.get(name)
    if module is None:
        raise DataError(
            f"unknown built-in source {name!r}; valid names: {', '.join(BUILTIN_TABLES)}"
        )
    count = module.DEFAULT_ROWS if rows is None else rows
    limit = module.max_rows()
    if not 1 <= count <= limit:
        raise DataError(
            f"built-in source {name!r} has between 1 and {limit} distinct rows; "
            f"{count} were requested"
        )
    return module.generate(np.random.default_rng(seed), count)
