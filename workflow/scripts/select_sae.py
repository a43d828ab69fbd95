"""Snakemake adapter: one selected-latent list (manual, top or random)."""

from pathlib import Path

from caft.pipeline import base_model_shape
from caft.sae_pipeline import select_sae_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    inputs = snakemake.input
    select_sae_stage(
        variant=snakemake.wildcards.variant,
        task=snakemake.wildcards.task,
        scores_path=Path(inputs.scores),
        n_layers=base_model_shape(Path(inputs.base))[0],
        section=snakemake.params.cfg,
        manual_path=Path(inputs.manual) if "manual" in inputs.keys() else None,
        out_path=Path(snakemake.output[0]),
    )
