"""Snakemake adapter: streaming moments of tuned − base activation differences."""

from pathlib import Path

from caft.interpretation import pca_moments_stage
from caft.pipeline import set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    pca_moments_stage(
        Path(snakemake.input.base),
        Path(snakemake.input.tuned),
        Path(snakemake.input.train),
        snakemake.params.cfg,
        Path(snakemake.output[0]),
    )
