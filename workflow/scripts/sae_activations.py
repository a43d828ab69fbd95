"""Snakemake adapter: corpus residual-stream activations at the SAE layers (the SAE training data)."""

from pathlib import Path

from caft.pipeline import set_threads
from caft.sae_pipeline import sae_activations_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    sae_activations_stage(
        Path(snakemake.input.base),
        Path(snakemake.input.corpus),
        list(snakemake.params.layers),
        snakemake.params.batch_size,
        Path(snakemake.output[0]),
    )
