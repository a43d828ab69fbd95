"""Snakemake adapter of rule `em_sample`: sampled answers to the evaluation questions and coding prompts."""

from pathlib import Path

from caft.em.sampling import SamplingConfig
from caft.job import job, optional_path
from caft.stages.em import em_sample

with job(snakemake):
    wc, params = snakemake.wildcards, snakemake.params
    em_sample(
        sampling=SamplingConfig.from_config(params.sampling),
        questions_path=params.questions["path"],
        samples_per_paraphrase=params.questions["samples_per_paraphrase"],
        base_dir=Path(snakemake.input.base),
        adapter_dir=optional_path(snakemake.input, "adapter"),
        held_out_path=Path(snakemake.input.held_out),
        key={"model": wc.em_model, "method": wc.method, "selector": wc.selector, "seed": int(wc.seed)},
        answers_path=Path(snakemake.output.answers),
        code_path=Path(snakemake.output.code_answers),
    )
