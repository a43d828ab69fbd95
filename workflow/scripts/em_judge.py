"""Snakemake adapter of rule `em_judge`: every answer scored per criterion by its configured judge."""

from pathlib import Path

from caft.job import job
from caft.stages.em import em_judge

with job(snakemake):
    em_judge(snakemake.params.judges, Path(snakemake.input.answers), Path(snakemake.input.code_answers),
             Path(snakemake.output.answers), Path(snakemake.output.code_answers))
