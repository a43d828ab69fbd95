"""Snakemake adapter of rule `em_sae_candidates`: the EM model's SAE candidate latents (three generators)."""

from pathlib import Path

from caft.em.candidates import EmSaeCandidatesConfig
from caft.job import job, layer_inputs
from caft.stages.em import em_sae_candidates

with job(snakemake):
    inputs = snakemake.input
    em_sae_candidates(EmSaeCandidatesConfig.from_config(snakemake.params.cfg), int(snakemake.params.max_tokens),
                      Path(inputs.base), Path(inputs.adapter), Path(inputs.train), Path(inputs.responses),
                      layer_inputs(inputs), Path(snakemake.output[0]))
