"""Snakemake adapter: one selected-direction list (manual, top or random)."""

from pathlib import Path

from caft.interpretation import select_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    inputs = snakemake.input
    select_stage(
        method="pca",
        variant=snakemake.wildcards.variant,
        task=snakemake.wildcards.task,
        summary_path=Path(inputs.summary),
        section=snakemake.params.cfg,
        manual_path=Path(inputs.manual) if "manual" in inputs.keys() else None,
        out_path=Path(snakemake.output[0]),
    )
