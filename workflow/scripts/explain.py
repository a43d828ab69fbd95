"""Snakemake adapter of rule `explain`: explanations, simulation scores and relevance of one task's candidates."""

from pathlib import Path

from caft.interpret.explanations import ExplainConfig
from caft.job import job, optional_path
from caft.stages.autointerp import explain

with job(snakemake):
    explain(
        snakemake.wildcards.imethod,
        snakemake.wildcards.task,
        ExplainConfig.from_config(snakemake.params.cfg),
        snakemake.params.query,
        Path(snakemake.input.windows),
        Path(snakemake.output[0]),
        optional_path(snakemake.input, "scores"),
    )
