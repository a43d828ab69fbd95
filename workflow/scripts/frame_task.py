"""Snakemake adapter: build D_amb / D_val / D_OOD of a gender-style frame task."""

import pandas as pd

from caft.artifacts import provenance, write_parquet
from caft.stage import stage
from caft.tasks import FrameTaskConfig, build_frame_task

with stage(snakemake.log[0]) as log:
    cfg = FrameTaskConfig.from_config(snakemake.params.cfg)
    splits = build_frame_task(pd.read_parquet(snakemake.input.frames), cfg)
    for split, table in splits.items():
        log.info("%s: %d examples, target letters %s", split, len(table), table["target"].value_counts().to_dict())
        meta = provenance("frame_task", snakemake.params.cfg, task=snakemake.wildcards.frame_task, split=split)
        write_parquet(table, snakemake.output[split], meta)
