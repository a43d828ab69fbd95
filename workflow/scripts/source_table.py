"""Snakemake adapter: load, validate and dedupe one source table."""

from caft.artifacts import provenance, write_parquet
from caft.sources import load_source
from caft.stage import stage

with stage(snakemake.log[0]):
    name = snakemake.wildcards.source
    table = load_source(name, snakemake.params.spec, snakemake.params.table)
    write_parquet(table, snakemake.output[0], provenance("source_table", snakemake.params.spec, source=name))
