"""What every ``workflow/scripts/*.py`` adapter shares: logging into the rule's log, clean failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from caft.errors import CaftError

log = logging.getLogger("caft")


@contextmanager
def stage(log_path: str | Path) -> Iterator[logging.Logger]:
    """Route logging and stderr (tqdm progress) to the rule's log; a user error ends the job in one line.

    A :class:`CaftError` names the file, key or row at fault, so its traceback would only hide the
    message: it is logged and the job exits with status 1 (Snakemake then shows the log).
    """
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
