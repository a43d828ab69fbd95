"""Concept Ablation Fine-Tuning (CAFT) workflow. README.md lists the stages; docs/ explains them."""

from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version, validate

from caft.config import check_config
from caft.model.shape import base_model_shape, check_layer_indices

min_version("9.27")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Key-naming messages first, then Snakemake's validate() (which also fills schema defaults).
SOURCE_TABLES = check_config(config, Path(workflow.basedir) / "config/schema.yaml")
validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/paths.smk"


# Layer indices against the base model's shape, read without loading it: a bad index fails here, not in
# the job that reaches it.
MODEL_SHAPE = base_model_shape(config["model"], Path(BASE_MODEL))
if MODEL_SHAPE:
    check_layer_indices(config, MODEL_SHAPE[0], config["model"]["name"])
else:
    logger.info(
        f"layer indices not checked at parse time: the shape of {config['model']['name']} is not known "
        "before it is downloaded; the first job that loads it checks them"
    )


include: "rules/tasks.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/pca.smk"
include: "rules/sae.smk"
include: "rules/autointerp.smk"
include: "rules/finetune.smk"
include: "rules/diagnostics.smk"
include: "rules/em.smk"


wildcard_constraints:
    source=alternation(config["sources"]),
    file=alternation(PACKAGE_SOURCES),
    packaged_model=alternation(PACKAGED_MODELS),
    frame_task=alternation(config["frame_tasks"]),
    a=alternation(question_sources()),
    b=alternation(question_sources()),
    task=alternation(RUN_KEYS),
    method="[a-z][a-z-]*",
    selector="[a-z][a-z0-9-]*",
    seed="[0-9]+",
    evaluation="trained|test-only",
    dataset=alternation(datasets()),
    variant="manual|top|auto|random/seed[0-9]+|random-pool/seed[0-9]+",
    eraser="mean-diff|leace",
    imethod="pca|sae",
    layer="[0-9]+",
    sae_method="sae|sae-latent",
    em_model=alternation(config["em"]["models"]),


localrules:
    all,
    em,


rule all:
    default_target: True
    input:
        all_targets(),
