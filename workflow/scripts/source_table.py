"""Snakemake adapter of rule `source_table`: load, validate and dedupe one source table."""

from pathlib import Path

from caft.data.sources import SourceSpec
from caft.job import job
from caft.stages.data import source_table

with job(snakemake):
    name = snakemake.wildcards.source
    source_table(name, SourceSpec.from_config(snakemake.params.spec), snakemake.params.table,
                 Path(snakemake.output[0]))
