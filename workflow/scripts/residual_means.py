"""Snakemake adapter: the base model's mean residual per layer over the corpus (projection centers)."""

from pathlib import Path

from caft.pipeline import residual_means_stage, set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    residual_means_stage(
        Path(snakemake.input.base), Path(snakemake.input.corpus), snakemake.params.batch_size, Path(snakemake.output[0])
    )
