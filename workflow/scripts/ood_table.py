"""Snakemake adapter of rule `ood_table`: mean ± SEM over seeds of every run, as tables and a plot."""

from pathlib import Path

from caft.job import job
from caft.stages.finetune import ood_table

with job(snakemake):
    out = snakemake.output
    ood_table(
        [Path(p) for p in snakemake.input.metrics],
        Path(out.parquet),
        Path(out.csv),
        Path(out.markdown),
        Path(out.plot),
    )
