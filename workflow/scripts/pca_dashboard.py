"""Snakemake adapter: the PCA dashboard of one task."""

from pathlib import Path

from caft.interpretation import pca_dashboard_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    inputs = snakemake.input
    pca_dashboard_stage(
        snakemake.wildcards.task,
        Path(inputs.windows),
        Path(inputs.summary),
        {name: Path(inputs[name]) for name in ("manual", "top", "random")},
        Path(snakemake.output[0]),
    )
