"""Snakemake adapter of rule `corpus`: the generic text corpus."""

from pathlib import Path

from caft.data.corpus import CorpusConfig
from caft.job import job
from caft.stages.base import corpus

with job(snakemake):
    corpus(CorpusConfig.from_config(snakemake.params.cfg), Path(snakemake.input.base), Path(snakemake.output[0]))
