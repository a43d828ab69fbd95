"""Snakemake adapter: principal components per layer."""

from pathlib import Path

from caft.interpretation import pca_components_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    pca_components_stage(
        Path(snakemake.input.moments),
        snakemake.params.cfg,
        Path(snakemake.output.components),
        Path(snakemake.output.summary),
    )
