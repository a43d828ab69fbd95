"""Snakemake adapter of rule `evaluate`: one run on D_val and D_OOD in each of its modes."""

from pathlib import Path

from caft.finetune.evaluation import EvaluationConfig
from caft.job import job, optional_path
from caft.stages.finetune import evaluate

with job(snakemake):
    wc, inputs = snakemake.wildcards, snakemake.input
    evaluate(
        cfg=EvaluationConfig.from_config(snakemake.params.cfg),
        checkpoint_dir=Path(inputs.model),
        dtype=snakemake.params.dtype,
        splits={"val": Path(inputs.val), "ood": Path(inputs.ood)},
        spec_path=optional_path(inputs, "spec"),
        modes=snakemake.params.modes,
        answer=snakemake.params.answer,
        key={"task": wc.task, "method": wc.method, "selector": wc.selector, "seed": int(wc.seed)},
        predictions_path=Path(snakemake.output.predictions),
        metrics_path=Path(snakemake.output.metrics),
    )
