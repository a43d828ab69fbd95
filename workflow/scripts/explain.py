"""Snakemake adapter: explanations, simulation scores and relevance of one task's candidates."""

from pathlib import Path

from caft.autointerp import explain_stage
from caft.pipeline import set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    explain_stage(
        snakemake.wildcards.imethod,
        snakemake.wildcards.task,
        Path(snakemake.input.windows),
        snakemake.params.cfg,
        snakemake.params.query,
        Path(snakemake.output[0]),
        Path(snakemake.input.scores) if "scores" in snakemake.input.keys() else None,
    )
