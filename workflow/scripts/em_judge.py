"""Snakemake adapter of rule `em_judge`: every answer scored per criterion by its configured judge."""

from pathlib import Path

from caft.em.judges import checkpoint_inputs
from caft.job import job
from caft.stages.em import em_judge

with job(snakemake):
    inputs = snakemake.input
    em_judge(snakemake.params.judges, Path(inputs.answers), Path(inputs.code_answers), Path(snakemake.output.answers),
             Path(snakemake.output.code_answers), checkpoint_inputs(dict(inputs.items())))
