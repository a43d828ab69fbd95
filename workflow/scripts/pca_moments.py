"""Snakemake adapter of rule `pca_moments`: streaming moments of tuned − base residual differences."""

from pathlib import Path

from caft.directions.moments import PcaMomentsConfig
from caft.job import job
from caft.stages.pca import pca_moments

with job(snakemake):
    inputs = snakemake.input
    pca_moments(
        PcaMomentsConfig.from_config(snakemake.params.cfg),
        base_dir=Path(inputs.base),
        tuned_dir=Path(inputs.tuned),
        train_split=Path(inputs.train),
        out_path=Path(snakemake.output[0]),
    )
