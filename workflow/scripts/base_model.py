"""Snakemake adapter of rule `base_model`: the configured model as a local safetensors checkpoint."""

from pathlib import Path

from caft.job import job
from caft.model.loading import ModelSpec
from caft.stages.base import base_model

with job(snakemake):
    base_model(ModelSpec.from_config(snakemake.params.model), Path(snakemake.output[0]))
