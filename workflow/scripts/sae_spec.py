"""Snakemake adapter: the intervention spec of an SAE selection (projection or latent ablation)."""

from pathlib import Path

from caft.sae_pipeline import sae_inputs, sae_spec_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    inputs = snakemake.input
    sae_spec_stage(
        snakemake.wildcards.sae_method,
        Path(inputs.selection),
        sae_inputs(inputs),
        Path(snakemake.output[0]),
        Path(inputs.centers) if "centers" in inputs.keys() else None,
    )
