"""General helpers of the rule files (library code each script runs, retries, constraints, config keys)."""

import json
from pathlib import Path

from caft.tracking import caft_modules_of


def library_code(rule):
    """The package modules a rule's script runs, computed from its imports (followed through the package,
    lazy imports included), as inputs: Snakemake does not track imported modules by itself, and a
    hand-kept list drifts."""
    script = Path(workflow.basedir) / "workflow" / "scripts" / f"{rule}.py"
    return sorted(str(path) for path in caft_modules_of(script, Path(workflow.basedir) / "src"))


def script_of(rule):
    """A rule's adapter: ``workflow/scripts/<rule>.py``."""
    return f"../workflow/scripts/{rule}.py"


def read_json(path):
    return json.loads(Path(path).read_text())


def mem_per_attempt(mem_mb):
    """Memory that grows with each retry, so a job killed for memory is not resubmitted as is."""

    def mem(wildcards, attempt):
        return mem_mb * attempt

    return mem


def alternation(names):
    """A wildcard constraint matching exactly the configured names."""
    return "|".join(sorted(names)) or "(?!)"


def config_keys(section, *keys):
    """Only the keys of a config section a rule uses, so changing another one does not rerun it."""
    return {key: config[section][key] for key in keys}


# Params are a rerun trigger (Snakemake's default `--rerun-triggers`): a key a rule passes reruns every
# job of the rule when it changes. Keys that change no output and that the job does not need stay out of
# params (tests/test_rule_params.py toggles them).


def without(section, *keys):
    """`section` less `keys`: keys that change none of a rule's outputs."""
    return {key: value for key, value in section.items() if key not in keys}
