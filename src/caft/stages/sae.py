"""Stages of `rules/sae.smk`: SAE training data, one SAE per layer, attribution scores, latent windows,
selections, specs and the dashboard of the SAE half of CAFT."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from caft.ablation.selection import (
    Selection,
    SelectorConfig,
    load_manual_selection,
    projection_spec,
    random_pool_selection,
    random_selection,
    top_selection,
)
from caft.ablation.specs import InterventionSpec, centered, save_spec
from caft.artifacts import load_tensors, provenance, read_parquet_metadata, save_tensors, write_parquet
from caft.directions.attribution import (
    AttributionConfig,
    attribution_scores,
    exact_effects,
    rank_scores,
    validate_estimates,
)
from caft.directions.sae_folders import load_local_sae, load_sae_folders, save_sae
from caft.directions.saes import (
    ACTIVATIONS_FORMAT,
    SaeSourceConfig,
    load_pretrained_sae,
    pretrained_sae_id,
    sae_layer_id,
    train_sae,
)
from caft.directions.profiles import ActivationProfiles, card_profiles, logit_effects, training_examples
from caft.directions.windows import (
    WindowsConfig,
    latent_activations,
    residual_rows,
    sae_scores,
    top_windows,
)
from caft.errors import ConfigError, DataError
from caft.interpret.dashboard import render_dashboard, write_dashboard
from caft.interpret.explanations import with_explanations
from caft.model.loading import checkpoint_shape, load_checkpoint
from caft.model.prompts import task_answers
from caft.model.shape import check_layer_key

log = logging.getLogger(__name__)

REPORT_COLUMNS = (
    "layer", "source", "architecture", "d_in", "d_sae", "k", "tokens", "steps", "seconds",
    "tokens_per_second", "fvu", "l0", "dead_fraction", "train_rows", "holdout_rows",
)
SCORE_CARD_FIELDS = ("effect", "validation_effect", "exact_effect", "rank", "layer_rank", "firing_rate", "corpus_density")
OPTIONAL_CARD_FIELDS = ("sources", "mean_difference", "difference_encoding")
"""Score columns a card shows when the score table has them (the EM candidates' generators)."""


def sae_activations(base_dir: Path, corpus_path: Path, layers: list[int], batch_size: int, out_path: Path) -> None:
    """Residual-stream activations (block outputs) of every corpus token but BOS/padding, per layer: the
    SAE training data, kept as an artifact so retraining one SAE does not rerun the model."""
    n_layers, d_model = checkpoint_shape(base_dir)
    check_layer_key("saes.layers", layers, n_layers, str(base_dir))
    model, tokenizer = load_checkpoint(base_dir)
    docs = pd.read_parquet(corpus_path)["input_ids"].tolist()
    # Each layer's rows go straight into one array sized in advance: joining per-batch chunks at the end
    # held two copies (the freed chunks stay in the heap), 13.2 GB at 0.5M tokens, past 24 GB at 1M.
    bos = tokenizer.bos_token_id
    tokens = sum(sum(1 for token in ids if token != bos) for ids in docs)  # what `token_mask` keeps
    arrays = {layer: np.empty((tokens, d_model), dtype=np.float32) for layer in layers}
    filled = dict.fromkeys(layers, 0)
    for layer, kept in residual_rows(model, tokenizer, docs, layers, batch_size, progress=True):
        arrays[layer][filled[layer] : filled[layer] + len(kept)] = kept
        filled[layer] += len(kept)
    assert set(filled.values()) == {tokens}, f"kept {filled} token rows, expected {tokens}"
    tensors = {f"layer_{layer}": torch.from_numpy(arrays[layer]) for layer in layers}
    log.info("activations: %d tokens x %d dims for layers %s", *tensors[f"layer_{layers[0]}"].shape, layers)
    save_tensors(tensors, out_path, ACTIVATIONS_FORMAT, provenance("sae_activations", {"layers": layers}))


def _layer_activations(path: Path, layer: int) -> torch.Tensor:
    key = f"layer_{layer}"
    tensors, _ = load_tensors(path, ACTIVATIONS_FORMAT, names=[key])  # one layer, not all of them
    return tensors[key].float()


def provision_sae(layer: int, cfg: SaeSourceConfig, base_dir: Path, activations_path: Path | None, out_dir: Path,
                  report_path: Path) -> None:
    """One layer's SAE as a sae-lens folder, from the configured source, plus a one-row report."""
    _, d_model = checkpoint_shape(base_dir)
    row: dict[str, Any] = {"layer": layer, "source": cfg.source}
    if cfg.source == "train":
        origin = "saes.train"
        if activations_path is None or cfg.train is None:
            raise ConfigError("saes.from is 'train' but no activations or saes.train settings were given")
        activations = _layer_activations(activations_path, layer)
        sae, report = train_sae(activations, cfg.train, hook_name=f"model.layers.{layer}", model_name=str(base_dir),
                                progress=True)
        row |= report
        log.info("layer %d: FVU %.3f, L0 %.1f, dead %.1f%%, %d tokens in %.0f s", layer, report["fvu"],
                 report["l0"], 100 * report["dead_fraction"], report["tokens"], report["seconds"])
    elif cfg.source == "pretrained":
        sae_id = pretrained_sae_id(cfg.release, cfg.sae_id, layer)
        sae = load_pretrained_sae(cfg.release, sae_id)
        origin = f"saes.release {cfg.release!r} id {sae_id!r}"
        # the stages hook the output of block `layer`: an SAE of another site or layer would be silently wrong
        expected = f"blocks.{layer}.hook_resid_post"
        if sae.cfg.metadata.hook_name != expected:
            raise ConfigError(f"layer {layer} (saes.layers): {origin} hooks {sae.cfg.metadata.hook_name!r}, not "
                              f"the residual stream after block {layer} ({expected!r})")
    else:
        folder = sae_layer_id(cfg.path, layer)
        origin = f"saes.path {folder!r}"
        sae = load_local_sae(Path(folder))
    if sae.cfg.d_in != d_model:
        raise ConfigError(f"layer {layer} (saes.layers): the {cfg.source} SAE ({origin}) has d_in {sae.cfg.d_in}, "
                          f"the model's hidden size is {d_model}: it was made for another model")
    # a trained batchtopk SAE is saved as JumpReLU: the report keeps the architecture it was trained as
    row = {"architecture": sae.cfg.architecture(), "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae} | row
    save_sae(sae, out_dir)
    report_frame = pd.DataFrame([{column: row.get(column, np.nan) for column in REPORT_COLUMNS}])
    write_parquet(report_frame, report_path, provenance("sae", cfg, layer=layer))


def sae_attribution(cfg: AttributionConfig, model_dir: Path, train_split: Path, sae_dirs: Mapping[int, Path],
                    out_path: Path) -> None:
    """Attribution-patching effect of every latent of every SAE over D_amb (its first `max_prompts` rows),
    ranked, with the top `validate_top` latents' exact ablation effects as a check of the linear estimate.

    The check runs on the first `validate_prompts` prompts, estimate and exact effect alike (exact
    ablation costs a forward pass per latent per batch): ``validation_effect`` holds the estimate on
    those prompts next to ``exact_effect``, NaN for unvalidated latents.
    """
    model, tokenizer = load_checkpoint(model_dir)
    saes = load_sae_folders(sae_dirs, model.device)
    table = pd.read_parquet(train_split)
    table = table.iloc[: cfg.max_prompts] if cfg.max_prompts else table
    correct, other = task_answers(table, tokenizer, str(train_split))
    prompts = table["prompt"].tolist()
    start = time.perf_counter()
    scores = attribution_scores(model, tokenizer, prompts, correct, other, saes, cfg.batch_size, progress=True)
    attribution_seconds = time.perf_counter() - start
    scores = rank_scores(scores, cfg.top_n)
    top = scores.nsmallest(cfg.validate_top, "rank")
    latents = list(zip(top["layer"].astype(int), top["latent"].astype(int)))
    n = cfg.validate_prompts
    subset = (prompts[:n], correct[:n], other[:n])
    estimate = attribution_scores(model, tokenizer, *subset, saes, cfg.batch_size) if n < len(prompts) else scores
    start = time.perf_counter()
    exact = exact_effects(model, tokenizer, *subset, saes, latents, cfg.batch_size, progress=True)
    exact_seconds = time.perf_counter() - start
    checked, validation = validate_estimates(estimate, exact, latents)
    validated = checked["exact_effect"].notna().to_numpy()
    scores["validation_effect"] = np.where(validated, checked["effect"], np.nan)
    scores["exact_effect"] = checked["exact_effect"].to_numpy()
    validation |= {"prompts": len(subset[0])}
    log.info("attribution over %d prompts in %.0f s; exact ablation of %d latents over %d prompts in %.0f s; "
             "pearson %.3f", len(prompts), attribution_seconds, len(latents), len(subset[0]), exact_seconds,
             validation["pearson"])
    meta = provenance("sae_attribution", cfg, model=str(model_dir), prompts=len(prompts),
                      mean_metric=float(scores.attrs.get("mean_metric", float("nan"))),
                      seconds={"attribution": attribution_seconds, "exact": exact_seconds}, validation=validation)
    write_parquet(scores, out_path, meta)


def sae_windows(cfg: WindowsConfig, base_dir: Path, corpus_path: Path, scores_path: Path,
                sae_dirs: Mapping[int, Path], train_split: Path, out_path: Path, profiles_path: Path) -> None:
    """Top-activating corpus windows of the top latents, each one's corpus firing rate, and its card
    profile (histogram of active values, decoder-row logit effects, D_amb examples)."""
    model, tokenizer = load_checkpoint(base_dir)
    scores = pd.read_parquet(scores_path)
    top = scores[scores["top"]].sort_values(["layer", "latent"])
    latents = {int(layer): group["latent"].astype(int).tolist() for layer, group in top.groupby("layer")}
    saes = load_sae_folders({layer: sae_dirs[layer] for layer in latents}, model.device)
    docs = pd.read_parquet(corpus_path)["input_ids"].tolist()
    score_fn = sae_scores(saes, latents)
    profiles = ActivationProfiles(cfg.profile_sample, cfg.seed, active_only=True)
    batches = latent_activations(model, tokenizer, docs, score_fn, sorted(latents), cfg.batch_size, progress=True)
    windows = top_windows(profiles.observe(batches), tokenizer, window=cfg.window, per_component=cfg.per_component,
                          signs=("positive",), random_per_component=cfg.random_per_component, seed=cfg.seed,
                          quantile_per_component=cfg.quantile_per_component)
    decoders = {layer: saes[layer].W_dec.detach().float()[ids].T.cpu() for layer, ids in latents.items()}
    cards = card_profiles(
        profiles.frame(), logit_effects(model, tokenizer, decoders, cfg.logit_tokens),
        training_examples(model, tokenizer, train_split, score_fn, sorted(latents), cfg),
    )
    to_latent = {(layer, column): latent for layer, ids in latents.items() for column, latent in enumerate(ids)}
    windows, cards = (_latent_ids(frame, to_latent) for frame in (windows, cards))
    record = provenance("sae_windows", cfg)
    write_parquet(windows, out_path, record)
    write_parquet(cards, profiles_path, record)


def _latent_ids(frame: pd.DataFrame, to_latent: Mapping[tuple[int, int], int]) -> pd.DataFrame:
    """Score-function columns → SAE latent ids (column ``component`` → ``latent``)."""
    frame = frame.copy()
    frame["component"] = [to_latent[int(layer), int(c)] for layer, c in zip(frame["layer"], frame["component"])]
    return frame.rename(columns={"component": "latent"})


def _sae_widths(scores: pd.DataFrame) -> dict[int, int]:
    return {int(layer): int(n) + 1 for layer, n in scores.groupby("layer")["latent"].max().items()}


def _top_latents(scores: pd.DataFrame) -> dict[int, list[int]]:
    """The latents of the ``top`` rows (the attribution pool), per layer."""
    top = scores[scores["top"]]
    return {int(layer): group["latent"].astype(int).tolist() for layer, group in top.groupby("layer")}


def select_sae(variant: str, task: str, cfg: SelectorConfig, scores_path: Path, base_dir: Path,
               manual_path: Path | None, out_path: Path, windows_path: Path | None = None,
               manual_selection_path: Path | None = None) -> None:
    """One selected-latent list: ``manual`` (the YAML's ``sae:`` section: ids, or a rule applied to the
    windows at `windows_path`), ``top`` (the `top_k` largest effects over all layers), ``random/seed{N}``
    (the manual selection's counts per layer, drawn from the top latents) or ``random-pool/seed{N}`` (the
    manual selection's total, drawn from the top latents over all layers: the paper's random baseline);
    the random baselines read the manual selection's artifact at `manual_selection_path`. The top latents
    are the ``top`` rows of the scores: the `attribution.top_n` best global signed ranks (``rank`` 0 =
    largest effect over all layers)."""
    scores = pd.read_parquet(scores_path)
    if variant == "manual":
        n_layers = checkpoint_shape(base_dir)[0]
        selection = load_manual_selection(manual_path, "sae", n_layers=n_layers, n_ids=_sae_widths(scores),
                                          windows_path=windows_path, id_column="latent")
        _warn_outside_pool(selection, _top_latents(scores), scores_path)
    elif variant == "top":
        best = scores.nsmallest(cfg.top_k, "rank")
        counts = best.groupby("layer").size().to_dict()
        selection = top_selection(scores, counts, method="sae", task=task, id_column="latent", rank_column="rank",
                                  provenance={"global_top_k": cfg.top_k})
    elif variant.startswith("random/seed"):
        selection = random_selection(_top_latents(scores), cfg.random_counts(manual_selection_path, variant),
                                     int(variant.removeprefix("random/seed")), method="sae", task=task,
                                     provenance={"counts_from": str(manual_selection_path or "config"),
                                                 "pool": "attribution top"})
    elif variant.startswith("random-pool/seed"):
        pool = (f"{scores_path}: the {int(scores['top'].sum())} latents marked top, the best global signed "
                "attribution ranks over all layers (attribution.top_n)")
        selection = random_pool_selection(_top_latents(scores), cfg.random_count(manual_selection_path, variant),
                                          int(variant.removeprefix("random-pool/seed")), method="sae", task=task,
                                          pool_name=pool, provenance={"count_from": str(manual_selection_path or "config")})
    else:
        raise ConfigError(f"unknown sae selector variant '{variant}'; expected manual, top, random/seed<N> or "
                          "random-pool/seed<N>")
    log.info("sae %s: %d latents over layers %s", variant, selection.count(), sorted(selection.layers))
    selection.save(out_path)


def _warn_outside_pool(selection: Selection, pool: Mapping[int, list[int]], scores_path: Path) -> None:
    """Ids outside this machine's attribution pool are legal but usually read off another machine's
    dashboard (other SAEs or another pretune rank other latents): say so in the job's log."""
    outside = [f"L{layer} #{i}" for layer, ids in selection.layers.items() for i in ids
               if i not in set(pool.get(layer, []))]
    if outside:
        log.warning("manual selection: %d of %d latents lie outside the candidate pool of %s: %s. Ids read "
                    "off another machine's dashboard name other latents here; a 'rule:' section carries over",
                    len(outside), selection.count(), scores_path, ", ".join(outside))


def sae_spec(method: str, selection_path: Path, sae_dirs: Mapping[int, Path], out_path: Path,
             centers_path: Path | None = None) -> None:
    """``sae``: projection on the QR of the selected decoder rows (the paper's); ``sae-latent``: latent
    ablation h − Σ z_j W_dec[j] with the SAEs themselves."""
    selection = Selection.load(selection_path)
    missing = sorted(set(selection.layers) - set(sae_dirs))
    if missing:
        raise DataError(f"{selection_path}: layers {missing} have no SAE (SAEs exist for {sorted(sae_dirs)})")
    used = {layer: sae_dirs[layer] for layer in selection.layers}
    if method == "sae":
        decoders = {layer: load_local_sae(Path(folder)).W_dec.detach().float().T for layer, folder in used.items()}
        spec = centered(projection_spec(selection, decoders), centers_path)
    elif method == "sae-latent":
        spec = InterventionSpec(kind="latent", saes={layer: str(folder) for layer, folder in used.items()},
                                latents=selection.layers, provenance={"selection": selection.to_json()})
    else:
        raise ConfigError(f"unknown SAE intervention method {method!r}; expected sae or sae-latent")
    save_spec(spec, out_path)


def sae_dashboard(task: str, windows_path: Path, profiles_path: Path, scores_path: Path, report_paths: list[Path],
                  selection_paths: dict[str, Path], out_path: Path, explanations_path: Path | None = None) -> None:
    """Latents with the largest attribution effects, their windows, explanations and selection status,
    plus the SAE training report and the check of the attribution estimate against exact ablation."""
    selections = {name: Selection.load(path) for name, path in selection_paths.items()}
    scores = pd.read_parquet(scores_path)
    profiles = pd.read_parquet(profiles_path)
    densities = profiles[["layer", "latent", "density"]].rename(columns={"density": "corpus_density"})
    summary = scores[scores["top"]].merge(densities, on=["layer", "latent"], how="left").sort_values("rank")
    summary, explained = with_explanations(summary, explanations_path, "latent")
    report = pd.concat([pd.read_parquet(path) for path in report_paths], ignore_index=True)
    validation = read_parquet_metadata(scores_path).get("validation", {})
    tables = [("SAEs (training report on held-out corpus tokens)", report)]
    if validation:  # the EM candidates have no exact-ablation check
        tables.append(("Attribution estimate vs exact ablation (top latents)", pd.DataFrame([validation])))
    html = render_dashboard(
        f"SAE latents — {task}", pd.read_parquet(windows_path), summary, selections, id_column="latent",
        card_fields=[*SCORE_CARD_FIELDS, *(f for f in OPTIONAL_CARD_FIELDS if f in summary), *explained],
        tables=tables, profiles=profiles,
    )
    write_dashboard(html, out_path)
