"""Shared pytest fixtures, and how the suite is split over processes."""

import pytest

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_chains", "tests.fake_openai"]

SHARED_CHAINS = {"tests.test_pca_workflow": "directions", "tests.test_sae_workflow": "directions"}
"""Modules that read one session-scoped chain (`tests.fixtures_chains`): they run in one process."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs ``-n $(CORES) --dist loadgroup``) every module runs in one
    process, so a module-scoped tiny chain is built once, and the modules sharing a session chain run in
    the same process. A single test process kept about one of two cores busy: Snakemake's jobs run two at
    a time but the chains have serial stretches (base model, corpus, the pretune run)."""
    for item in items:
        name = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(SHARED_CHAINS.get(name, name)))
