"""Snakemake adapter: one fine-tuning run (task, method, selector, seed)."""

from pathlib import Path

from caft.pipeline import finetune_run, set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    wc = snakemake.wildcards
    finetune_run(
        base_dir=Path(snakemake.input.base),
        model_section=snakemake.params.model,
        train_split=Path(snakemake.input.train),
        spec_path=Path(snakemake.input.spec) if "spec" in snakemake.input.keys() else None,
        finetune_section=snakemake.params.cfg,
        task_kind=snakemake.params.task_kind,
        seed=int(wc.seed),
        key={"task": wc.task, "method": wc.method, "selector": wc.selector},
        checkpoint_dir=Path(snakemake.output.model),
        log_path=Path(snakemake.output.train_log),
        meta_path=Path(snakemake.output.meta),
        answer=snakemake.params.answer,
        mode=snakemake.params.mode,
    )
