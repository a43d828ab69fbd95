"""Snakemake adapter of rule `em_finetune`: one LoRA fine-tune (model, method, selector, seed)."""

from pathlib import Path

from caft.em.sft import condition_config
from caft.job import job, optional_path
from caft.stages.em import em_finetune

with job(snakemake):
    wc, params = snakemake.wildcards, snakemake.params
    adapter = Path(snakemake.output.adapter)
    cfg = condition_config(params.cfg, wc.method, wc.selector)
    em_finetune(
        cfg=cfg,
        base_dir=Path(snakemake.input.base),
        train_path=Path(snakemake.input.train),
        spec_path=optional_path(snakemake.input, "spec"),
        seed=int(wc.seed),
        mode=params.mode,
        key={"model": wc.em_model, "method": wc.method, "selector": wc.selector},
        adapter_dir=adapter,
        log_path=Path(snakemake.output.train_log),
        meta_path=Path(snakemake.output.meta),
        merged_dir=adapter / "merged" if cfg.lora.merge else None,
    )
