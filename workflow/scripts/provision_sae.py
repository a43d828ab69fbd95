"""Snakemake adapter: one layer's SAE (trained, pretrained or local) and its report."""

from pathlib import Path

from caft.pipeline import set_threads
from caft.sae_pipeline import provision_sae_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    inputs = snakemake.input
    provision_sae_stage(
        int(snakemake.wildcards.layer),
        snakemake.params.cfg,
        Path(inputs.base),
        Path(inputs.activations) if "activations" in inputs.keys() else None,
        Path(snakemake.output.sae),
        Path(snakemake.output.report),
    )
