"""Snakemake adapter: top corpus windows of the top-attribution latents."""

from pathlib import Path

from caft.pipeline import set_threads
from caft.sae_pipeline import sae_inputs, sae_windows_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    inputs = snakemake.input
    sae_windows_stage(
        Path(inputs.base),
        Path(inputs.corpus),
        Path(inputs.scores),
        sae_inputs(inputs),
        snakemake.params.cfg,
        Path(snakemake.output[0]),
    )
