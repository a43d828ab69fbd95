"""Snakemake adapter of rule `sae_dashboard`: the SAE-latent dashboard of one task."""

from pathlib import Path

from caft.interpret.dashboard import KNOWN_BADGES
from caft.job import job, optional_path
from caft.stages.sae import sae_dashboard

with job(snakemake):
    inputs = snakemake.input
    sae_dashboard(
        snakemake.params.task,
        Path(inputs.windows),
        Path(inputs.profiles),
        Path(inputs.scores),
        [Path(path) for path in inputs.reports],
        {name: Path(inputs[name]) for name in KNOWN_BADGES if name in inputs.keys()},
        Path(snakemake.output[0]),
        optional_path(inputs, "explanations"),
    )
