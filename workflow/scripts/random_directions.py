"""Snakemake adapter: the seeded random-directions baseline spec."""

from pathlib import Path

from caft.pipeline import make_random_directions
from caft.stage import stage

with stage(snakemake.log[0]):
    make_random_directions(
        Path(snakemake.input.base),
        snakemake.params.layers,
        snakemake.params.cfg["k"],
        int(snakemake.wildcards.seed),
        Path(snakemake.output[0]),
        Path(snakemake.input.centers) if "centers" in snakemake.input.keys() else None,
    )
