"""Snakemake adapter of rule `em_responses`: the base model's answers to generic chat prompts."""

from pathlib import Path

from caft.em.sampling import SamplingConfig
from caft.job import job
from caft.stages.em import em_responses

with job(snakemake):
    cfg = dict(snakemake.params.cfg)
    prompts = cfg.pop("prompts")
    em_responses(prompts, SamplingConfig.from_config(cfg), Path(snakemake.input.base), Path(snakemake.output[0]))
