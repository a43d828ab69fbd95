"""Snakemake adapter of rule `sae_activations`: corpus residuals at the SAE layers (the SAE training data)."""

from pathlib import Path

from caft.job import job
from caft.stages.sae import sae_activations

with job(snakemake):
    sae_activations(
        Path(snakemake.input.base),
        Path(snakemake.input.corpus),
        list(snakemake.params.layers),
        snakemake.params.batch_size,
        Path(snakemake.output[0]),
    )
