"""Snakemake adapter of rule `select_sae`: one selected-latent list (manual, top, random or random-pool)."""

from pathlib import Path

from caft.ablation.selection import SelectorConfig, manual_file
from caft.job import job, optional_path
from caft.stages.sae import select_sae

with job(snakemake):
    inputs = snakemake.input
    select_sae(
        variant=snakemake.wildcards.variant,
        task=snakemake.params.task,
        cfg=SelectorConfig.from_config(snakemake.params.cfg),
        scores_path=Path(inputs.scores),
        base_dir=Path(inputs.base),
        manual_path=manual_file(snakemake.params.manual),
        out_path=Path(snakemake.output[0]),
        windows_path=optional_path(inputs, "windows"),
        manual_selection_path=optional_path(inputs, "manual_selection"),
    )
