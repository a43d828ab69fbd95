"""Snakemake adapter of rule `provision_sae`: one layer's SAE (trained, pretrained or local) and its report."""

from pathlib import Path

from caft.directions.saes import SaeSourceConfig
from caft.job import job, optional_path
from caft.stages.sae import provision_sae

with job(snakemake):
    provision_sae(
        int(snakemake.wildcards.layer),
        SaeSourceConfig.from_config(snakemake.params.cfg),
        Path(snakemake.input.base),
        optional_path(snakemake.input, "activations"),
        Path(snakemake.output.sae),
        Path(snakemake.output.report),
    )
