"""Snakemake adapter of rule `em_table`: misalignment and vulnerable-code rates, table and plot."""

from pathlib import Path

from caft.job import job
from caft.stages.em import em_table

with job(snakemake):
    out = snakemake.output
    em_table([Path(p) for p in snakemake.input.answers], [Path(p) for p in snakemake.input.code_answers],
             Path(out.parquet), Path(out.csv), Path(out.markdown), Path(out.plot))
