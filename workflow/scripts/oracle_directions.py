"""Snakemake adapter: the oracle bound's spec, the spurious concept erased with its labels."""

from pathlib import Path

from caft.pipeline import oracle_directions, set_threads
from caft.stage import stage

with stage(snakemake.log[0]):
    set_threads(snakemake.threads)
    cfg = snakemake.params.cfg
    oracle_directions(
        model_dir=Path(snakemake.input.model),
        train_split=Path(snakemake.input.train),
        skyline_split=Path(snakemake.input.skyline),
        intended=snakemake.params.answers["intended"],
        spurious=snakemake.params.answers["spurious"],
        eraser=snakemake.wildcards.eraser,
        layers=cfg["layers"],
        seed=cfg["seed"],
        max_examples=cfg["max_examples"],
        batch_size=cfg["batch_size"],
        out_path=Path(snakemake.output[0]),
        positions=cfg["positions"],
    )
