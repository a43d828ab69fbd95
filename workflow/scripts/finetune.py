"""Snakemake adapter of rule `finetune`: one fine-tuning run (task, method, selector, seed)."""

from pathlib import Path

from caft.finetune.training import TrainConfig
from caft.job import job, optional_path
from caft.model.loading import ModelSpec
from caft.stages.finetune import finetune

with job(snakemake):
    wc, params = snakemake.wildcards, snakemake.params
    finetune(
        cfg=TrainConfig.from_config(params.cfg, params.task_kind),
        model=ModelSpec.from_config(params.model),
        base_dir=Path(snakemake.input.base),
        train_split=Path(snakemake.input.train),
        spec_path=optional_path(snakemake.input, "spec"),
        seed=int(wc.seed),
        key={"task": wc.task, "method": wc.method, "selector": wc.selector},
        checkpoint_dir=Path(snakemake.output.model),
        log_path=Path(snakemake.output.train_log),
        meta_path=Path(snakemake.output.meta),
        answer=params.answer,
        mode=params.mode,
    )
