"""Snakemake adapter of rule `residual_means`: the base model's mean residual per layer over the corpus."""

from pathlib import Path

from caft.job import job
from caft.stages.base import residual_means

with job(snakemake):
    residual_means(
        Path(snakemake.input.base), Path(snakemake.input.corpus), snakemake.params.batch_size, Path(snakemake.output[0])
    )
