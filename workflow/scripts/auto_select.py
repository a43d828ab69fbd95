"""Snakemake adapter of rule `auto_select`: the automatic (threshold) selection of one task's candidates."""

from pathlib import Path

from caft.ablation.selection import AutoSelectConfig
from caft.job import job
from caft.stages.autointerp import auto_select

with job(snakemake):
    auto_select(
        snakemake.wildcards.imethod,
        snakemake.wildcards.task,
        AutoSelectConfig.from_config(snakemake.params.cfg),
        Path(snakemake.input.explanations),
        Path(snakemake.output[0]),
    )
