"""What every ``workflow/scripts/<rule>.py`` adapter shares: the job's log, its cores, clean failures."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from caft.errors import CaftError

log = logging.getLogger("caft")

TRACE_ENV = "CAFT_TRACE_CODE"
"""When set to a folder, each job writes there which package files its stage ran (``{rule}.{pid}.txt``):
the workflow tests check that against the code each rule tracks (`caft.tracking`)."""

PACKAGE_DIR = Path(__file__).resolve().parent


@contextmanager
def _code_trace(rule: str) -> Iterator[None]:
    folder = os.environ.get(TRACE_ENV)
    if not folder:
        yield
        return
    ran: set[str] = set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            ran.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        files = sorted(str(path) for name in ran if (path := Path(name).resolve()).is_relative_to(PACKAGE_DIR))
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{rule}.{os.getpid()}.txt").write_text("\n".join(files) + "\n")


@contextmanager
def job(smk: Any) -> Iterator[logging.Logger]:
    """Run a rule's stage inside the Snakemake job `smk` (the script's ``snakemake`` object): logging and
    stderr (tqdm progress) go to the rule's log, torch uses exactly the cores Snakemake granted, and a
    user error ends the job in one line.

    A :class:`CaftError` names the file, key or row at fault, so its traceback would only hide the
    message: it is logged and the job exits with status 1 (Snakemake then shows the log).
    """
    import torch

    torch.set_num_threads(max(1, int(smk.threads)))
    log_path = Path(smk.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as handle, _code_trace(smk.rule):
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
        except Exception:
            log.exception("unexpected error (a bug: please report it with this log)")
            raise
        finally:
            sys.stderr = stderr


def optional_path(inputs: Any, name: str) -> Path | None:
    """A named input that only some jobs of a rule have (e.g. the manual file of the manual selector)."""
    return Path(inputs[name]) if name in inputs.keys() else None


def layer_inputs(inputs: Mapping[str, Any], prefix: str = "sae_") -> dict[int, Path]:
    """Per-layer folders among a rule's named inputs (``sae_{layer}``), by layer."""
    return {int(name.removeprefix(prefix)): Path(inputs[name]) for name in inputs.keys() if name.startswith(prefix)}
