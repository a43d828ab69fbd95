"""Snakemake adapter of rule `source_table`: load, validate and dedupe one source table."""

from pathlib import Path

from caft.job import job
from caft.stages.data import source_table

with job(snakemake):
    source_table(snakemake.wildcards.source, snakemake.params.spec, snakemake.params.table, Path(snakemake.output[0]))
