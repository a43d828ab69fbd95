"""Snakemake adapter: the task survey and the paper's filter (results/survey/eligible.json)."""

from pathlib import Path

from caft.pipeline import survey_stage
from caft.stage import stage

with stage(snakemake.log[0]):
    out = snakemake.output
    survey_stage(
        [Path(p) for p in [*snakemake.input.none, *snakemake.input.skyline]],
        {task: tuple(pair) for task, pair in snakemake.params.concepts.items()},
        snakemake.params.criteria,
        Path(out.parquet),
        Path(out.csv),
        Path(out.markdown),
        Path(out.plot),
        Path(out.eligible),
    )
