"""Snakemake adapter of rule `sae_attribution`: attribution scores of every SAE latent over D_amb."""

from pathlib import Path

from caft.directions.attribution import AttributionConfig
from caft.job import job, layer_inputs
from caft.stages.sae import sae_attribution

with job(snakemake):
    inputs = snakemake.input
    sae_attribution(
        AttributionConfig.from_config(snakemake.params.cfg),
        Path(inputs.model),
        Path(inputs.train),
        layer_inputs(inputs),
        Path(snakemake.output[0]),
    )
