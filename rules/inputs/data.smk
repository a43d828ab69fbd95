"""Input functions and param pickers of rules/data.smk."""

from caft.data.sources import LOCAL_SUFFIXES


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


def frame_task_section(wildcards):
    return config["frame_tasks"][wildcards.frame_task]


def frame_task_source(wildcards):
    return SOURCE_TABLE.format(source=config["frame_tasks"][wildcards.frame_task]["source"])
