"""Snakemake adapter of rule `steer_spec`: the steering spec of one PCA selection."""

from pathlib import Path

from caft.job import job, optional_path
from caft.stages.pca import steer_spec

with job(snakemake):
    steer_spec(
        coefficient=float(snakemake.params.coefficient),
        directions_path=Path(snakemake.input.directions),
        moments_path=Path(snakemake.input.moments),
        out_path=Path(snakemake.output[0]),
        reference_path=optional_path(snakemake.input, "reference"),
    )
