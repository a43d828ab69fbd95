"""What every ``workflow/scripts/<rule>.py`` adapter shares: the job's log, its cores, clean failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from caft.errors import CaftError

log = logging.getLogger("caft")


@contextmanager
def job(log_path: str | Path, threads: int | None = None) -> Iterator[logging.Logger]:
    """Route logging and stderr (tqdm progress) to the rule's log, use exactly the cores Snakemake granted,
    and end a user error in one line.

    A :class:`CaftError` names the file, key or row at fault, so its traceback would only hide the
    message: it is logged and the job exits with status 1 (Snakemake then shows the log).
    """
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as handle:
        stderr, sys.stderr = sys.stderr, handle
        logging.basicConfig(
            stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
        )
        try:
            yield log
        except CaftError as err:
            log.error("%s", err)
            print(f"ERROR: {err}", file=stderr)
            raise SystemExit(1) from None
        finally:
            sys.stderr = stderr


def optional_path(inputs: Any, name: str) -> Path | None:
    """A named input that only some jobs of a rule have (e.g. the manual file of the manual selector)."""
    return Path(inputs[name]) if name in inputs.keys() else None


def layer_inputs(inputs: Mapping[str, Any], prefix: str = "sae_") -> dict[int, Path]:
    """Per-layer folders among a rule's named inputs (``sae_{layer}``), by layer."""
    return {int(name.removeprefix(prefix)): Path(inputs[name]) for name in inputs.keys() if name.startswith(prefix)}
