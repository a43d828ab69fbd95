"""What a job and a Snakemake start cost before any work: imports per rule script, and parsing the workflow.

Usage (in the repository, nothing else running):

    .venv/bin/python benchmarks/workflow_overhead.py [--repeats 3]

Every job is a fresh Python process, so a rule whose script imports torch and transformers pays seconds
for milliseconds of work (the default has ~40 small jobs), and every `snakemake` call — each dry run,
each SLURM job — parses the workflow, which computes the library code of every rule. Side by side, in one
run: each script's imports in a fresh interpreter (median of `--repeats`, and which heavy libraries they
load); the rules' library-code computation with the per-file cache and with the cache cleared before
every rule (what each start did before the cache); and `snakemake -n` on the default config.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from caft import tracking

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
HEAVY = ("torch", "transformers", "sae_lens", "peft")
LIBRARY_CODE = re.compile(r'library_code\("(\w+)"\)')
IMPORT = re.compile(r"^(?:from (caft[\w.]*) import|import (caft[\w.]*))", re.M)


def script_import(script: Path) -> tuple[float, list[str]]:
    """Seconds a fresh interpreter takes to import what `script` imports, and the heavy libraries loaded."""
    modules = sorted({a or b for a, b in IMPORT.findall(script.read_text())})
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            f"print(' '.join(sorted(set({HEAVY!r}) & set(sys.modules))))")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - started, out.split()


def library_code_seconds(scripts: list[Path], cached: bool) -> float:
    """The rules' library-code computation as one workflow parse does it."""
    tracking.clear_cache()
    started = time.perf_counter()
    for script in scripts:
        if not cached:
            tracking.clear_cache()
        tracking.caft_modules_of(script, ROOT / "src")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scripts = sorted(SCRIPTS.glob("*.py"))

    print(f"{'script':22} {'import s':>8}  heavy libraries")
    light, heavy = [], []
    for script in scripts:
        runs = [script_import(script) for _ in range(args.repeats)]
        seconds, loaded = statistics.median(r[0] for r in runs), runs[0][1]
        (heavy if "torch" in loaded else light).append(seconds)
        print(f"{script.stem:22} {seconds:8.2f}  {' '.join(loaded) or '-'}")
    print(f"scripts without torch: {len(light)}, median {statistics.median(light):.2f} s; "
          f"with it: {len(heavy)}, median {statistics.median(heavy):.2f} s")

    # one parse computes the library code of every rule (`library_code("<script>")` in the rule files)
    calls = [SCRIPTS / f"{name}.py" for smk in sorted((ROOT / "rules").rglob("*.smk"))
             for name in LIBRARY_CODE.findall(smk.read_text())]
    cached = statistics.median(library_code_seconds(calls, cached=True) for _ in range(args.repeats))
    uncached = statistics.median(library_code_seconds(calls, cached=False) for _ in range(args.repeats))
    print(f"library code of {len(calls)} rules: cached {cached:.2f} s, re-parsed per rule {uncached:.2f} s "
          f"({uncached / cached:.0f}x)")

    dry = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-n", "--workflow-profile", "none", "-q"], cwd=ROOT,
                       capture_output=True, check=True)
        dry.append(time.perf_counter() - started)
    print(f"snakemake -n (default config): median {statistics.median(dry):.2f} s")


if __name__ == "__main__":
    main()
