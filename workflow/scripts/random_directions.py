"""Snakemake adapter of rule `random_directions`: the seeded random-directions baseline spec."""

from pathlib import Path

from caft.job import job, optional_path
from caft.stages.finetune import random_directions

with job(snakemake):
    random_directions(
        Path(snakemake.input.base),
        snakemake.params.layers,
        snakemake.params.cfg["k"],
        int(snakemake.wildcards.seed),
        Path(snakemake.output[0]),
        optional_path(snakemake.input, "centers"),
    )
