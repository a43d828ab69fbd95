"""Snakemake adapter: the PCA dashboard of one task."""

from pathlib import Path

from caft.dashboard import KNOWN_BADGES
from caft.interpretation import pca_dashboard_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    inputs = snakemake.input
    pca_dashboard_stage(
        snakemake.wildcards.task,
        Path(inputs.windows),
        Path(inputs.summary),
        {name: Path(inputs[name]) for name in KNOWN_BADGES if name in inputs.keys()},
        Path(snakemake.output[0]),
        Path(inputs.explanations) if "explanations" in inputs.keys() else None,
    )
