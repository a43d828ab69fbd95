"""Stages of `rules/pca.smk`: difference moments, components, windows, selections, projection specs and
the dashboard of the PCA half of CAFT."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from caft.ablation.selection import (
    Selection,
    SelectorConfig,
    load_manual_selection,
    projection_spec,
    random_pool_selection,
    random_selection,
    top_selection,
)
from caft.ablation.specs import centered, load_spec, save_spec, steering_spec
from caft.artifacts import provenance, write_parquet
from caft.directions.moments import (
    PcaMomentsConfig,
    accumulate_differences,
    load_moments,
    prompts_with_answers,
    save_moments,
)
from caft.directions.pca import PcaComponentsConfig, fit_pca, load_components, save_components
from caft.directions.profiles import ActivationProfiles, card_profiles, logit_effects, training_examples
from caft.directions.windows import WindowsConfig, component_activations, projection_scores, top_windows
from caft.errors import ConfigError
from caft.interpret.dashboard import render_dashboard, write_dashboard
from caft.interpret.explanations import with_explanations
from caft.model.loading import checkpoint_shape, load_checkpoint, resolve_layers

log = logging.getLogger(__name__)


def pca_moments(cfg: PcaMomentsConfig, base_dir: Path, tuned_dir: Path, train_split: Path, out_path: Path) -> None:
    """Streaming moments of tuned − base residual differences over D_amb prompts with their answer."""
    base, tokenizer = load_checkpoint(base_dir)
    tuned, _ = load_checkpoint(tuned_dir)
    layers = resolve_layers(cfg.layers, checkpoint_shape(base_dir)[0], "pca.layers")
    texts = prompts_with_answers(pd.read_parquet(train_split))
    moments = accumulate_differences(base, tuned, tokenizer, texts, layers, cfg.include_bos, cfg.batch_size,
                                     progress=True)
    log.info("moments over %d tokens per layer (BOS %s)", next(iter(moments.values())).count,
             "included" if cfg.include_bos else "excluded")
    save_moments(moments, out_path, provenance("pca_moments", cfg, tuned=str(tuned_dir), texts=len(texts)))


def pca_components(cfg: PcaComponentsConfig, moments_path: Path, components_path: Path, summary_path: Path) -> None:
    """Top principal components per layer (safetensors) and their variance and rank (parquet)."""
    moments, meta = load_moments(moments_path)
    components, summary = fit_pca(moments, cfg.components)
    record = provenance("pca_components", cfg, moments=meta)
    save_components(components, components_path, record)
    write_parquet(summary, summary_path, record)


def pca_windows(cfg: WindowsConfig, base_dir: Path, corpus_path: Path, components_path: Path, train_split: Path,
                out_path: Path, profiles_path: Path) -> None:
    """Most positive and most negative corpus windows of every component, on the base model, and each
    component's card profile (activation histogram, logit effects, D_amb examples)."""
    model, tokenizer = load_checkpoint(base_dir)
    components, _ = load_components(components_path)
    layers = sorted(components)
    docs = pd.read_parquet(corpus_path)["input_ids"].tolist()
    profiles = ActivationProfiles(cfg.profile_sample, cfg.seed)
    activations = component_activations(model, tokenizer, docs, layers, components, cfg.batch_size, progress=True)
    windows = top_windows(profiles.observe(activations), tokenizer, window=cfg.window,
                          per_component=cfg.per_component, random_per_component=cfg.random_per_component,
                          seed=cfg.seed, quantile_per_component=cfg.quantile_per_component)
    cards = card_profiles(
        profiles.frame(), logit_effects(model, tokenizer, components, cfg.logit_tokens),
        training_examples(model, tokenizer, train_split, projection_scores(components), layers, cfg),
    )
    record = provenance("pca_windows", cfg)
    write_parquet(windows, out_path, record)
    write_parquet(cards, profiles_path, record)


def select_pca(variant: str, task: str, cfg: SelectorConfig, summary_path: Path, manual_path: Path | None,
               out_path: Path, windows_path: Path | None = None, manual_selection_path: Path | None = None) -> None:
    """One selected-component list: ``manual`` (ids, or a rule applied to the windows at `windows_path`),
    ``top`` (`top_k` per layer), ``random/seed{N}`` (the manual selection's counts per layer) or
    ``random-pool/seed{N}`` (the manual selection's total, drawn from the components of every fitted layer
    together); the random baselines read the manual selection's artifact at `manual_selection_path`."""
    summary = pd.read_parquet(summary_path)
    per_layer = summary.groupby("layer")["component"].max().add(1).to_dict()
    candidates = {int(layer): list(range(int(count))) for layer, count in per_layer.items()}
    if variant == "manual":
        selection = load_manual_selection(manual_path, "pca", n_layers=max(per_layer) + 1, n_ids=per_layer,
                                          windows_path=windows_path, id_column="component")
    elif variant == "top":
        selection = top_selection(summary, cfg.top_k, method="pca", task=task)
    elif variant.startswith("random/seed"):
        selection = random_selection(candidates, cfg.random_counts(manual_selection_path, variant),
                                     int(variant.removeprefix("random/seed")), method="pca", task=task,
                                     provenance={"counts_from": str(manual_selection_path or "config")})
    elif variant.startswith("random-pool/seed"):
        pool = f"{summary_path}: the components of layers {sorted(candidates)} (pca.components per layer)"
        selection = random_pool_selection(candidates, cfg.random_count(manual_selection_path, variant),
                                          int(variant.removeprefix("random-pool/seed")), method="pca", task=task,
                                          pool_name=pool, provenance={"count_from": str(manual_selection_path or "config")})
    else:
        raise ConfigError(f"unknown pca selector variant '{variant}'; expected manual, top, random/seed<N> or "
                          "random-pool/seed<N>")
    log.info("pca %s: %d directions over layers %s", variant, selection.count(), sorted(selection.layers))
    selection.save(out_path)


def pca_spec(selection_path: Path, components_path: Path, out_path: Path, centers_path: Path | None = None) -> None:
    """Projection spec: the selected principal components as orthonormal bases per layer."""
    components, _ = load_components(components_path)
    save_spec(centered(projection_spec(Selection.load(selection_path), components), centers_path), out_path)


def steer_spec(coefficient: float, directions_path: Path, moments_path: Path, out_path: Path,
               reference_path: Path | None = None) -> None:
    """Steering spec: per layer of the PCA projection spec at `directions_path`, c times the mean tuned − base
    difference along its components; with `reference_path` (the steering of the selection whose counts a
    random draw copies: the manual one, or for EM without a manual file the top one), each layer's shift
    rescaled to the reference's norm there."""
    moments, _ = load_moments(moments_path)
    means = {layer: moment.sum / moment.count for layer, moment in moments.items()}
    norms = None
    if reference_path is not None:
        norms = {layer: float(shift.norm()) for layer, shift in load_spec(reference_path).shifts.items()}
    spec = steering_spec(load_spec(directions_path), means, coefficient, norms)
    log.info("steering %s: |shift| per layer %s", directions_path.stem,
             {layer: round(float(shift.norm()), 3) for layer, shift in spec.shifts.items()})
    save_spec(spec, out_path)


def pca_dashboard(task: str, windows_path: Path, profiles_path: Path, summary_path: Path,
                  selection_paths: dict[str, Path],
                  out_path: Path, explanations_path: Path | None = None) -> None:
    """One self-contained HTML page: layers → components → windows, with each selector's choices and,
    when given, each end's explanation, simulation score and relevance."""
    selections = {name: Selection.load(path) for name, path in selection_paths.items()}
    summary, explained = with_explanations(pd.read_parquet(summary_path), explanations_path, "component")
    html = render_dashboard(
        f"PCA directions — {task}", pd.read_parquet(windows_path), summary, selections,
        card_fields=["eigenvalue", "explained_variance_ratio", "global_rank", *explained],
        profiles=pd.read_parquet(profiles_path),
    )
    write_dashboard(html, out_path)
