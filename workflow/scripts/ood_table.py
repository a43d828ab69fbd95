"""Snakemake adapter: aggregate every run's metrics into the OOD accuracy tables and plot."""

from pathlib import Path

from caft.pipeline import build_ood_table
from caft.stage import stage

with stage(snakemake.log[0]):
    out = snakemake.output
    build_ood_table(
        [Path(p) for p in snakemake.input.metrics],
        Path(out.parquet),
        Path(out.csv),
        Path(out.markdown),
        Path(out.plot),
    )
