"""Snakemake adapter of rule `em_judge_model`: a slowly loading local judge as a checkpoint."""

from pathlib import Path

from caft.job import job
from caft.model.loading import ModelSpec
from caft.stages.em import em_judge_model

with job(snakemake):
    em_judge_model(ModelSpec.from_config(snakemake.params.model), Path(snakemake.output[0]))
