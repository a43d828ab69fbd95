"""Snakemake adapter of rule `em_pca_moments`: tuned − base difference moments on answer tokens."""

from pathlib import Path

from caft.job import job
from caft.stages.em import em_pca_moments

with job(snakemake):
    em_pca_moments(list(snakemake.params.layers), int(snakemake.params.batch_size), Path(snakemake.input.base),
                   Path(snakemake.input.adapter), Path(snakemake.input.responses), Path(snakemake.output[0]))
