"""Snakemake adapter: build the splits shared by both intended indices of an MCMC pair."""

import pandas as pd

from caft.artifacts import provenance, write_parquet
from caft.stage import stage
from caft.tasks import McmcSplitConfig, build_mcmc_task

with stage(snakemake.log[0]) as log:
    a, b = snakemake.wildcards.a, snakemake.wildcards.b
    cfg = McmcSplitConfig.from_config(snakemake.params.cfg)
    splits = build_mcmc_task(pd.read_parquet(snakemake.input.a), pd.read_parquet(snakemake.input.b), a, b, cfg)
    for split, table in splits.items():
        log.info("%s: %d examples, letters of Qa's answer %s", split, len(table),
                 table["answer_a"].value_counts().to_dict())
        meta = provenance("mcmc_task", snakemake.params.cfg, pair=[a, b], split=split)
        write_parquet(table, snakemake.output[split], meta)
