"""Input functions and helpers shared by the rule files (no rules here)."""

from pathlib import Path

import caft.config
from caft.sources import LOCAL_SUFFIXES
from caft.tasks import SPLITS


def library_code(*names):
    """Package modules a rule's script imports: Snakemake does not track them by itself."""
    package = Path(workflow.basedir) / "src" / "caft"
    files = []
    for name in names:
        path = package / name
        files += sorted(str(p) for p in path.glob("*.py")) if path.is_dir() else [str(path)]
    return files


def mem_per_attempt(mem_mb):
    """Memory that grows with each retry, so a job killed for memory is not resubmitted as is."""

    def mem(wildcards, attempt):
        return mem_mb * attempt

    return mem


def alternation(names):
    """A wildcard constraint matching exactly the configured names."""
    return "|".join(sorted(names)) or "(?!)"


def question_sources():
    return sorted({s for a, b, _ in config["mcmc"]["triples"] for s in (a, b)})


def mcmc_pairs():
    return sorted({caft.config.pair_id(a, b) for a, b, _ in config["mcmc"]["triples"]})


def all_task_splits():
    datasets = list(config["frame_tasks"]) + mcmc_pairs()
    return expand("results/data/{dataset}/{split}.parquet", dataset=datasets, split=SPLITS)


def split_outputs(prefix):
    return {split: f"{prefix}/{split}.parquet" for split in SPLITS}


def source_spec(wildcards):
    return config["sources"][wildcards.source]


def source_table_kind(wildcards):
    return SOURCE_TABLES[wildcards.source]


def local_source_files(wildcards):
    """The local file of a ``from: local`` source, so editing it reruns its table (none if missing)."""
    spec = config["sources"][wildcards.source]
    if spec["from"] != "local":
        return []
    stem = Path(spec["path"]) / spec.get("file", wildcards.source)
    return [str(p) for suffix in LOCAL_SUFFIXES if (p := stem.with_suffix(suffix)).is_file()]


def source_code(wildcards):
    """The modules that build this source: the generator's only for built-in sources."""
    builtin = ["builtin"] if config["sources"][wildcards.source]["from"] == "builtin" else []
    return library_code("sources.py", "artifacts.py", *builtin)


def frame_task_section(wildcards):
    return config["frame_tasks"][wildcards.task]


def frame_task_source(wildcards):
    return f"results/data/sources/{config['frame_tasks'][wildcards.task]['source']}.parquet"


wildcard_constraints:
    source=alternation(config["sources"]),
    task=alternation(config["frame_tasks"]),
    a=alternation(question_sources()),
    b=alternation(question_sources()),
