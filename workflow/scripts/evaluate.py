"""Snakemake adapter: evaluate one run on D_val and D_OOD in each of its modes."""

from pathlib import Path

from caft.pipeline import evaluate_run, set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    wc = snakemake.wildcards
    evaluate_run(
        checkpoint_dir=Path(snakemake.input.model),
        dtype=snakemake.params.dtype,
        splits={"val": Path(snakemake.input.val), "ood": Path(snakemake.input.ood)},
        spec_path=Path(snakemake.input.spec) if "spec" in snakemake.input.keys() else None,
        modes=snakemake.params.modes,
        answer=snakemake.params.answer,
        batch_size=snakemake.params.cfg["batch_size"],
        precision=snakemake.params.cfg["precision"],
        key={"task": wc.task, "method": wc.method, "selector": wc.selector, "seed": int(wc.seed)},
        predictions_path=Path(snakemake.output.predictions),
        metrics_path=Path(snakemake.output.metrics),
    )
