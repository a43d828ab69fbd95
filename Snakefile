"""Concept Ablation Fine-Tuning (CAFT) workflow. See README.md for the stages and artifacts."""

from pathlib import Path

from snakemake.utils import min_version, validate

from caft.config import check_config

min_version("9.27")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Key-naming messages first, then Snakemake's validate() (which also fills schema defaults).
SOURCE_TABLES = check_config(config, Path(workflow.basedir) / "config/schema.yaml")
validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/finetune.smk"
include: "rules/pca.smk"
include: "rules/sae.smk"
include: "rules/autointerp.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        all_targets(),
