"""Snakemake adapter: materialise the configured base model as a local safetensors checkpoint."""

from pathlib import Path

from caft.pipeline import build_base_model, set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    build_base_model(snakemake.params.model, Path(snakemake.output[0]))
