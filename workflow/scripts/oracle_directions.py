"""Snakemake adapter of rule `oracle_directions`: the oracle bound's spec, the shortcut's label erased."""

from pathlib import Path

from caft.directions.oracle import OracleConfig
from caft.job import job
from caft.stages.diagnostics import oracle_directions

with job(snakemake):
    inputs = snakemake.input
    oracle_directions(
        cfg=OracleConfig.from_config(snakemake.params.cfg),
        eraser=snakemake.wildcards.eraser,
        model_dir=Path(inputs.model),
        train_split=Path(inputs.train),
        skyline_split=Path(inputs.skyline),
        intended=snakemake.params.answers["intended"],
        spurious=snakemake.params.answers["spurious"],
        out_path=Path(snakemake.output[0]),
    )
