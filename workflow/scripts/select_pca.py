"""Snakemake adapter of rule `select_pca`: one selected-component list (manual, top, random or random-pool)."""

from pathlib import Path

from caft.ablation.selection import SelectorConfig, manual_file
from caft.job import job, optional_path
from caft.stages.pca import select_pca

with job(snakemake):
    select_pca(
        variant=snakemake.wildcards.variant,
        task=snakemake.params.task,
        cfg=SelectorConfig.from_config(snakemake.params.cfg),
        summary_path=Path(snakemake.input.summary),
        manual_path=manual_file(snakemake.params.manual),
        out_path=Path(snakemake.output[0]),
        windows_path=optional_path(snakemake.input, "windows"),
        manual_selection_path=optional_path(snakemake.input, "manual_selection"),
    )
