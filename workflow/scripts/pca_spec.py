"""Snakemake adapter: the projection spec of a PCA selection."""

from pathlib import Path

from caft.interpretation import pca_spec_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    pca_spec_stage(Path(snakemake.input.selection), Path(snakemake.input.components), Path(snakemake.output[0]))
