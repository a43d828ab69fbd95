"""Shared pytest fixtures, and how `make test` splits the suite over its two processes."""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_chains", "tests.fake_openai"]

CHAIN_MODULES = frozenset(f"tests/test_{name}_workflow.py" for name in ("pca", "sae", "em", "diagnostics", "finetune"))
"""The modules that build a tiny chain: one process runs them all, one chain at a time (two chains side
by side contend for the cores their jobs already fill); the other process takes the rest of the suite,
much of which waits on a scheduler, a browser, a fake endpoint or a killed run."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``pytest -n 2`` (``make test``) every module runs in one process, so its module-scoped
    fixtures (a workflow copy, the SLURM cluster) are built once, and the chain modules all run in the
    same process. (pytest-xdist's ``loadgroup`` would do this from marks, but its group suffix on the
    test ids is lost under pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ChainsInOneProcess(LoadScopeScheduling):
        """Work units are modules, the chain modules one unit; the largest units go out first."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "chains" if module in CHAIN_MODULES else module

    return ChainsInOneProcess(config, log)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per test process: the two processes and the chains' jobs share two cores.
    import torch

    torch.set_num_threads(1)
