"""Snakemake adapter of rule `em_judge_check`: the configured judges scored on the labelled answers."""

from pathlib import Path

from caft.em.judges import checkpoint_inputs
from caft.job import job
from caft.stages.em import em_judge_check

with job(snakemake):
    out = snakemake.output
    em_judge_check(snakemake.params.judges, snakemake.params.cfg, checkpoint_inputs(dict(snakemake.input.items())),
                   Path(out.scores), Path(out.summary), Path(out.markdown), Path(out.examples))
