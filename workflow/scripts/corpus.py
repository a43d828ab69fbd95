"""Snakemake adapter: build the generic-text corpus."""

from pathlib import Path

from caft.interpretation import corpus_stage
from caft.pipeline import set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    corpus_stage(snakemake.params.cfg, Path(snakemake.input.base), Path(snakemake.output[0]))
