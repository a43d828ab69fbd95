"""Snakemake adapter of rule `pca_spec`: the projection spec of one PCA selection."""

from pathlib import Path

from caft.job import job, optional_path
from caft.stages.pca import pca_spec

with job(snakemake):
    pca_spec(
        Path(snakemake.input.selection),
        Path(snakemake.input.components),
        Path(snakemake.output[0]),
        optional_path(snakemake.input, "centers"),
    )
