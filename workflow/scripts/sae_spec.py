"""Snakemake adapter of rule `sae_spec`: the projection or latent-ablation spec of one SAE selection."""

from pathlib import Path

from caft.job import job, layer_inputs, optional_path
from caft.stages.sae import sae_spec

with job(snakemake):
    inputs = snakemake.input
    sae_spec(
        snakemake.wildcards.sae_method,
        Path(inputs.selection),
        layer_inputs(inputs),
        Path(snakemake.output[0]),
        optional_path(inputs, "centers"),
    )
