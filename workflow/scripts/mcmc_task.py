"""Snakemake adapter of rule `mcmc_task`: the splits shared by both intended indices of an MCMC pair."""

from pathlib import Path

from caft.data.tasks import McmcSplitConfig
from caft.job import job
from caft.stages.data import mcmc_task

with job(snakemake):
    mcmc_task(
        a=snakemake.wildcards.a,
        b=snakemake.wildcards.b,
        cfg=McmcSplitConfig.from_config(snakemake.params.cfg),
        a_path=Path(snakemake.input.a),
        b_path=Path(snakemake.input.b),
        out_paths={split: Path(path) for split, path in snakemake.output.items()},
    )
