"""Snakemake adapter: the projection spec of a PCA selection."""

from pathlib import Path

from caft.interpretation import pca_spec_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    inputs = snakemake.input
    pca_spec_stage(
        Path(inputs.selection),
        Path(inputs.components),
        Path(snakemake.output[0]),
        Path(inputs.centers) if "centers" in inputs.keys() else None,
    )
