"""Snakemake adapter: top corpus windows of every principal component."""

from pathlib import Path

from caft.interpretation import pca_windows_stage
from caft.pipeline import set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    pca_windows_stage(
        Path(snakemake.input.base),
        Path(snakemake.input.corpus),
        Path(snakemake.input.components),
        snakemake.params.cfg,
        Path(snakemake.output[0]),
    )
