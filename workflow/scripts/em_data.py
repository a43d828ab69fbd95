"""Snakemake adapter of rule `em_data`: the chat SFT set, checked and split."""

from pathlib import Path

from caft.job import job
from caft.stages.em import em_data

with job(snakemake):
    cfg = snakemake.params.cfg
    em_data(cfg["source"], cfg["held_out_fraction"], cfg["seed"], Path(snakemake.output.train),
            Path(snakemake.output.held_out))
