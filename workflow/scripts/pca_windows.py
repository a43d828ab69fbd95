"""Snakemake adapter of rule `pca_windows`: most positive and negative corpus windows per component."""

from pathlib import Path

from caft.directions.windows import WindowsConfig
from caft.job import job
from caft.stages.pca import pca_windows

with job(snakemake):
    inputs = snakemake.input
    pca_windows(
        WindowsConfig.from_config(snakemake.params.cfg),
        Path(inputs.base),
        Path(inputs.corpus),
        Path(inputs.components),
        Path(inputs.train),
        Path(snakemake.output.windows),
        Path(snakemake.output.profiles),
    )
