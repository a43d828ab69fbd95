"""Stage functions of the PCA half of CAFT: corpus, difference moments, components, windows,
selections, intervention specs and dashboards (DESIGN §1 steps 1–3).

Like `caft.pipeline`, each function reads a stage's input files and writes its artifacts, so the
``workflow/scripts`` adapters stay thin and every stage is testable without Snakemake.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from caft.activations import accumulate_differences, load_moments, prompts_with_answers, save_moments
from caft.artifacts import provenance, write_parquet
from caft.corpus import CorpusConfig, build_corpus
from caft.dashboard import render_dashboard, write_dashboard
from caft.errors import ConfigError
from caft.explanations import per_candidate
from caft.interventions import save_spec
from caft.pca import fit_pca, load_components, save_components
from caft.pipeline import base_model_shape, centered, load_checkpoint, resolve_layers
from caft.selection import Selection, load_manual_selection, projection_spec, random_selection, top_selection
from caft.windows import component_activations, top_windows

log = logging.getLogger(__name__)


def corpus_stage(section: dict[str, Any], base_dir: Path, out_path: Path) -> None:
    """The generic-text corpus shared by every interpretation stage (tokens and text as parquet)."""
    table = build_corpus(CorpusConfig.from_config(section), lambda: load_checkpoint(base_dir))
    meta = provenance("corpus", section, bos_token_id=table.attrs["bos_token_id"],
                      tokens=int(table["n_tokens"].sum()))
    log.info("corpus: %d documents, %d tokens", len(table), int(table["n_tokens"].sum()))
    write_parquet(table, out_path, meta)


def pca_moments_stage(base_dir: Path, tuned_dir: Path, train_split: Path, section: dict[str, Any],
                      out_path: Path) -> None:
    """Streaming moments of tuned − base residual differences over D_amb prompts with their answer."""
    base, tokenizer = load_checkpoint(base_dir)
    tuned, _ = load_checkpoint(tuned_dir)
    n_layers, _ = base_model_shape(base_dir)
    layers = resolve_layers(section["layers"], n_layers)
    texts = prompts_with_answers(pd.read_parquet(train_split))
    moments = accumulate_differences(base, tuned, tokenizer, texts, layers, section["include_bos"],
                                     section["batch_size"], progress=True)
    log.info("moments over %d tokens per layer (BOS %s)", next(iter(moments.values())).count,
             "included" if section["include_bos"] else "excluded")
    save_moments(moments, out_path, provenance("pca_moments", section, tuned=str(tuned_dir), texts=len(texts)))


def pca_components_stage(moments_path: Path, section: dict[str, Any], components_path: Path,
                         summary_path: Path) -> None:
    """Top principal components per layer (safetensors) and their variance and rank (parquet)."""
    moments, meta = load_moments(moments_path)
    components, summary = fit_pca(moments, section["components"])
    record = provenance("pca_components", section, moments=meta)
    save_components(components, components_path, record)
    write_parquet(summary, summary_path, record)


def pca_windows_stage(base_dir: Path, corpus_path: Path, components_path: Path, section: dict[str, Any],
                      out_path: Path) -> None:
    """Most positive and most negative corpus windows of every component, on the base model."""
    model, tokenizer = load_checkpoint(base_dir)
    components, _ = load_components(components_path)
    corpus = pd.read_parquet(corpus_path)
    activations = component_activations(model, tokenizer, corpus["input_ids"].tolist(), sorted(components),
                                        components, section["batch_size"], progress=True)
    windows = top_windows(activations, tokenizer, window=section["window"], per_component=section["per_component"],
                          random_per_component=section["random_per_component"], seed=section["seed"])
    write_parquet(windows, out_path, provenance("pca_windows", section))


def select_stage(method: str, variant: str, task: str, summary_path: Path, section: dict[str, Any],
                 manual_path: Path | None, out_path: Path) -> None:
    """One selected-direction list: ``manual``, ``top`` or ``random/seed{N}`` (``section["counts"]``
    ids per layer, the manual selection's counts)."""
    summary = pd.read_parquet(summary_path)
    per_layer = summary.groupby("layer")["component"].max().add(1).to_dict()
    if variant == "manual":
        selection = load_manual_selection(manual_path, method, n_layers=max(per_layer) + 1, n_ids=per_layer)
    elif variant == "top":
        selection = top_selection(summary, section["top_k"], method=method, task=task)
    elif variant.startswith("random/seed"):
        candidates = {layer: list(range(count)) for layer, count in per_layer.items()}
        counts = {int(layer): count for layer, count in section["counts"].items()}
        selection = random_selection(candidates, counts, int(variant.removeprefix("random/seed")),
                                     method=method, task=task, provenance={"counts_from": "manual"})
    else:
        raise ConfigError(f"unknown {method} selector variant '{variant}'; expected manual, top or random/seed<N>")
    log.info("%s %s: %d directions over layers %s", method, variant, selection.count(), sorted(selection.layers))
    selection.save(out_path)


def pca_spec_stage(selection_path: Path, components_path: Path, out_path: Path,
                   centers_path: Path | None = None) -> None:
    """Projection spec: the selected principal components as orthonormal bases per layer."""
    components, _ = load_components(components_path)
    save_spec(centered(projection_spec(Selection.load(selection_path), components), centers_path), out_path)


def pca_dashboard_stage(task: str, windows_path: Path, summary_path: Path, selection_paths: dict[str, Path],
                        out_path: Path, explanations_path: Path | None = None) -> None:
    """One self-contained HTML page: layers → components → windows, with each selector's choices and,
    when given, each end's LLM explanation, simulation score and relevance."""
    selections = {name: Selection.load(path) for name, path in selection_paths.items()}
    summary, explained = with_explanations(pd.read_parquet(summary_path), explanations_path, "component")
    html = render_dashboard(
        f"PCA directions — {task}", pd.read_parquet(windows_path), summary, selections,
        card_fields=["eigenvalue", "explained_variance_ratio", "global_rank", *explained],
    )
    write_dashboard(html, out_path)


def with_explanations(summary: pd.DataFrame, explanations_path: Path | None,
                      id_column: str) -> tuple[pd.DataFrame, list[str]]:
    """The dashboard summary with the explanation columns of each card joined on, and their names."""
    if explanations_path is None:
        return summary, []
    explained = per_candidate(pd.read_parquet(explanations_path), id_column)
    columns = [c for c in explained.columns if c not in ("layer", id_column)]
    return summary.merge(explained, on=["layer", id_column], how="left"), columns
