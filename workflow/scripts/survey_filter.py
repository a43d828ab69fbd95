"""Snakemake adapter of checkpoint `survey_filter`: the paper's filter on the no-intervention runs."""

from pathlib import Path

from caft.finetune.survey import SurveyCriteria
from caft.job import job
from caft.stages.diagnostics import survey_filter

with job(snakemake):
    survey_filter(
        SurveyCriteria.from_config(snakemake.params.criteria),
        [Path(p) for p in snakemake.input.metrics],
        list(snakemake.params.tasks),
        Path(snakemake.output[0]),
    )
