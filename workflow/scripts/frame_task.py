"""Snakemake adapter of rule `frame_task`: the splits of a gender-style frame task."""

from pathlib import Path

from caft.data.tasks import FrameTaskConfig
from caft.job import job
from caft.stages.data import frame_task

with job(snakemake):
    frame_task(
        task=snakemake.wildcards.frame_task,
        cfg=FrameTaskConfig.from_config(snakemake.params.cfg),
        frames_path=Path(snakemake.input.frames),
        out_paths={split: Path(path) for split, path in snakemake.output.items()},
    )
