"""Snakemake adapter: the paper's filter on the no-intervention runs (which tasks need a skyline)."""

from pathlib import Path

from caft.pipeline import survey_filter_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    survey_filter_stage(
        [Path(p) for p in snakemake.input.metrics],
        [Path(p).parts[1] for p in snakemake.input.metrics],
        snakemake.params.criteria,
        Path(snakemake.output[0]),
    )
