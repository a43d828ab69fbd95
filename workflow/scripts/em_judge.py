"""Snakemake adapter of rule `em_judge`: every answer scored per criterion by its configured judge."""

from pathlib import Path

from caft.job import job
from caft.stages.em import em_judge

with job(snakemake):
    inputs = snakemake.input
    checkpoints = {key.removeprefix("judge_"): Path(inputs[key]) for key in inputs.keys() if key.startswith("judge_")}
    em_judge(snakemake.params.judges, Path(inputs.answers), Path(inputs.code_answers), Path(snakemake.output.answers),
             Path(snakemake.output.code_answers), checkpoints)
