"""Snakemake adapter of rule `pca_dashboard`: the PCA dashboard of one task."""

from pathlib import Path

from caft.interpret.dashboard import KNOWN_BADGES
from caft.job import job, optional_path
from caft.stages.pca import pca_dashboard

with job(snakemake):
    inputs = snakemake.input
    pca_dashboard(
        snakemake.params.task,
        Path(inputs.windows),
        Path(inputs.profiles),
        Path(inputs.summary),
        {name: Path(inputs[name]) for name in KNOWN_BADGES if name in inputs.keys()},
        Path(snakemake.output[0]),
        optional_path(inputs, "explanations"),
    )
