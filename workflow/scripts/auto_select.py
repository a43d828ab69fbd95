"""Snakemake adapter: the automatic (threshold) selection of one task's candidates."""

from pathlib import Path

from caft.autointerp import auto_select_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    auto_select_stage(
        snakemake.wildcards.imethod,
        snakemake.wildcards.task,
        Path(snakemake.input.explanations),
        snakemake.params.cfg,
        Path(snakemake.output[0]),
    )
