"""Snakemake adapter of rule `sae_windows`: top-activating corpus windows of the top latents."""

from pathlib import Path

from caft.directions.windows import WindowsConfig
from caft.job import job, layer_inputs
from caft.stages.sae import sae_windows

with job(snakemake):
    inputs = snakemake.input
    sae_windows(
        WindowsConfig.from_config(snakemake.params.cfg),
        Path(inputs.base),
        Path(inputs.corpus),
        Path(inputs.scores),
        layer_inputs(inputs),
        Path(inputs.train),
        Path(snakemake.output.windows),
        Path(snakemake.output.profiles),
    )
