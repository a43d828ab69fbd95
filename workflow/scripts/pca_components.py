"""Snakemake adapter of rule `pca_components`: top principal components per layer."""

from pathlib import Path

from caft.directions.pca import PcaComponentsConfig
from caft.job import job
from caft.stages.pca import pca_components

with job(snakemake):
    pca_components(
        PcaComponentsConfig.from_config(snakemake.params.cfg),
        Path(snakemake.input.moments),
        Path(snakemake.output.components),
        Path(snakemake.output.summary),
    )
