"""Snakemake adapter: attribution scores of every SAE latent over D_amb."""

from pathlib import Path

from caft.pipeline import set_threads
from caft.sae_pipeline import attribution_stage, sae_inputs
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    inputs = snakemake.input
    attribution_stage(
        Path(inputs.model), Path(inputs.train), sae_inputs(inputs), snakemake.params.cfg, Path(snakemake.output[0])
    )
