"""Snakemake adapter of rule `survey`: the task survey and the eligibility list (results/survey/eligible.json)."""

from pathlib import Path

from caft.finetune.survey import SurveyCriteria
from caft.job import job
from caft.stages.diagnostics import survey

with job(snakemake):
    out = snakemake.output
    survey(
        SurveyCriteria.from_config(snakemake.params.criteria),
        [Path(p) for p in [*snakemake.input.none, *snakemake.input.skyline]],
        {task: tuple(pair) for task, pair in snakemake.params.concepts.items()},
        Path(out.parquet),
        Path(out.csv),
        Path(out.markdown),
        Path(out.plot),
        Path(out.eligible),
    )
