"""Stage functions of the SAE half of CAFT: SAE provisioning, attribution scores, latent windows,
selections, intervention specs and dashboards (DESIGN §1 steps 1–4).

Like `caft.interpretation` for PCA, each function reads a stage's input files and writes its
artifacts, so the ``workflow/scripts`` adapters stay thin and every stage is testable without Snakemake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from caft.activations import load_tensors, save_tensors
from caft.artifacts import provenance, read_parquet_metadata, write_parquet
from caft.attribution import attribution_scores, exact_effects, rank_scores, validate_estimates
from caft.dashboard import render_dashboard, write_dashboard
from caft.errors import ConfigError, DataError
from caft.interpretation import with_explanations
from caft.interventions import InterventionSpec, save_spec
from caft.lm import letter_token_ids
from caft.pipeline import base_model_shape, centered, load_checkpoint
from caft.saes import SaeTrainConfig, load_local_sae, load_pretrained_sae, sae_layer_id, save_sae, train_sae
from caft.selection import Selection, load_manual_selection, projection_spec, random_selection, top_selection
from caft.windows import FiringRates, latent_activations, residual_rows, sae_scores, top_windows

log = logging.getLogger(__name__)

REPORT_COLUMNS = (
    "layer", "source", "architecture", "d_in", "d_sae", "k", "tokens", "steps", "seconds",
    "tokens_per_second", "fvu", "l0", "dead_fraction", "train_rows", "holdout_rows",
)
ACTIVATIONS_FORMAT = "caft.sae_activations/1"
SCORE_CARD_FIELDS = ("effect", "validation_effect", "exact_effect", "rank", "layer_rank", "firing_rate", "corpus_density")


def sae_activations_stage(base_dir: Path, corpus_path: Path, layers: list[int], batch_size: int,
                          out_path: Path) -> None:
    """Residual-stream activations (block outputs) of every corpus token but BOS/padding, per layer: the
    SAE training data, kept as an artifact so retraining one SAE does not rerun the model."""
    model, tokenizer = load_checkpoint(base_dir)
    corpus = pd.read_parquet(corpus_path)
    rows: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for layer, kept in residual_rows(model, tokenizer, corpus["input_ids"].tolist(), layers, batch_size, progress=True):
        rows[layer].append(kept)
    tensors = {f"layer_{layer}": torch.from_numpy(np.concatenate(chunks)) for layer, chunks in rows.items()}
    log.info("activations: %d tokens x %d dims for layers %s", *tensors[f"layer_{layers[0]}"].shape, layers)
    save_tensors(tensors, out_path, ACTIVATIONS_FORMAT, provenance("sae_activations", {"layers": layers}))


def provision_sae_stage(layer: int, section: dict[str, Any], base_dir: Path, activations_path: Path | None,
                        out_dir: Path, report_path: Path) -> None:
    """One layer's SAE as a sae-lens folder, from the configured source, plus a one-row report."""
    _, d_model = base_model_shape(base_dir)
    source = section["from"]
    row: dict[str, Any] = {"layer": layer, "source": source}
    if source == "train":
        if activations_path is None:
            raise ConfigError("saes.from is 'train' but no activations were given")
        cfg = SaeTrainConfig.from_config(section["train"])
        activations = _layer_activations(activations_path, layer)
        sae, report = train_sae(activations, cfg, hook_name=f"model.layers.{layer}", model_name=str(base_dir),
                                progress=True)
        row |= report
        log.info("layer %d: FVU %.3f, L0 %.1f, dead %.1f%%, %d tokens in %.0f s", layer, report["fvu"],
                 report["l0"], 100 * report["dead_fraction"], report["tokens"], report["seconds"])
    elif source == "pretrained":
        sae = load_pretrained_sae(section["release"], sae_layer_id(section["sae_id"], layer))
    elif source == "local":
        sae = load_local_sae(Path(sae_layer_id(section["path"], layer)))
    else:
        raise ConfigError(f"saes.from must be train, pretrained or local, got {source!r}")
    if sae.cfg.d_in != d_model:
        raise ConfigError(f"layer {layer}: the {source} SAE has d_in {sae.cfg.d_in}, the model's hidden size is "
                          f"{d_model}")
    # a trained batchtopk SAE is saved as JumpReLU: the report keeps the architecture it was trained as
    row = {"architecture": sae.cfg.architecture(), "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae} | row
    save_sae(sae, out_dir)
    report_frame = pd.DataFrame([{column: row.get(column, np.nan) for column in REPORT_COLUMNS}])
    write_parquet(report_frame, report_path, provenance("sae", section, layer=layer))


def sae_inputs(inputs: Mapping[str, Any]) -> dict[int, Path]:
    """The SAE folders among a rule's named inputs (``sae_{layer}``), by layer."""
    return {int(name.removeprefix("sae_")): Path(inputs[name]) for name in inputs.keys() if name.startswith("sae_")}


def _layer_activations(path: Path, layer: int) -> torch.Tensor:
    tensors, _ = load_tensors(path, ACTIVATIONS_FORMAT)
    key = f"layer_{layer}"
    if key not in tensors:
        raise DataError(f"{path}: no activations for layer {layer} (has {sorted(tensors)})")
    return tensors[key].float()


def _load_sae_dirs(sae_dirs: Mapping[int, Path], device: torch.device) -> dict[int, Any]:
    saes = {}
    for layer, folder in sorted(sae_dirs.items()):
        sae = load_local_sae(Path(folder)).to(device)
        sae.requires_grad_(False)
        saes[layer] = sae.eval()
    return saes


def task_answers(table: pd.DataFrame, tokenizer: Any, where: str) -> tuple[list[int], list[int]]:
    """Token ids of each D_amb row's correct and other letter (" A" / " B")."""
    missing = {"target", "other"} - set(table.columns)
    if missing:
        raise DataError(f"{where}: the task table lacks column(s) {sorted(missing)}")
    letters = letter_token_ids(tokenizer)
    unknown = sorted((set(table["target"]) | set(table["other"])) - set(letters))
    if unknown:
        raise DataError(f"{where}: answers must be one of {sorted(letters)}, got {unknown}")
    return [letters[t] for t in table["target"]], [letters[o] for o in table["other"]]


def attribution_stage(model_dir: Path, train_split: Path, sae_dirs: Mapping[int, Path], section: dict[str, Any],
                      out_path: Path) -> None:
    """Attribution-patching effect of every latent of every SAE over D_amb (its first `max_prompts` rows),
    ranked, with the top `validate_top` latents' exact ablation effects as a check of the linear estimate.

    The check runs on the first `validate_prompts` prompts, estimate and exact effect alike (exact
    ablation costs a forward pass per latent per batch): ``validation_effect`` holds the estimate on
    those prompts next to ``exact_effect``, NaN for unvalidated latents.
    """
    model, tokenizer = load_checkpoint(model_dir)
    saes = _load_sae_dirs(sae_dirs, model.device)
    table = pd.read_parquet(train_split)
    table = table.iloc[: section["max_prompts"]] if section["max_prompts"] else table
    correct, other = task_answers(table, tokenizer, str(train_split))
    prompts = table["prompt"].tolist()
    batch_size = section["batch_size"]
    start = time.perf_counter()
    scores = attribution_scores(model, tokenizer, prompts, correct, other, saes, batch_size, progress=True)
    attribution_seconds = time.perf_counter() - start
    scores = rank_scores(scores, section["top_n"])
    top = scores.nsmallest(section["validate_top"], "rank")
    latents = list(zip(top["layer"].astype(int), top["latent"].astype(int)))
    n = section["validate_prompts"]
    subset = (prompts[:n], correct[:n], other[:n])
    estimate = attribution_scores(model, tokenizer, *subset, saes, batch_size) if n < len(prompts) else scores
    start = time.perf_counter()
    exact = exact_effects(model, tokenizer, *subset, saes, latents, batch_size, progress=True)
    exact_seconds = time.perf_counter() - start
    checked, validation = validate_estimates(estimate, exact, latents)
    validated = checked["exact_effect"].notna().to_numpy()
    scores["validation_effect"] = np.where(validated, checked["effect"], np.nan)
    scores["exact_effect"] = checked["exact_effect"].to_numpy()
    validation |= {"prompts": len(subset[0])}
    log.info("attribution over %d prompts in %.0f s; exact ablation of %d latents over %d prompts in %.0f s; "
             "pearson %.3f", len(prompts), attribution_seconds, len(latents), len(subset[0]), exact_seconds,
             validation["pearson"])
    meta = provenance("sae_attribution", section, model=str(model_dir), prompts=len(prompts),
                      mean_metric=float(scores.attrs.get("mean_metric", float("nan"))),
                      seconds={"attribution": attribution_seconds, "exact": exact_seconds}, validation=validation)
    write_parquet(scores, out_path, meta)


def sae_windows_stage(base_dir: Path, corpus_path: Path, scores_path: Path, sae_dirs: Mapping[int, Path],
                      section: dict[str, Any], out_path: Path) -> None:
    """Top-activating corpus windows of the top latents, and each one's corpus firing rate."""
    model, tokenizer = load_checkpoint(base_dir)
    scores = pd.read_parquet(scores_path)
    top = scores[scores["top"]].sort_values(["layer", "latent"])
    latents = {int(layer): group["latent"].astype(int).tolist() for layer, group in top.groupby("layer")}
    saes = _load_sae_dirs({layer: sae_dirs[layer] for layer in latents}, model.device)
    corpus = pd.read_parquet(corpus_path)
    density = FiringRates()
    batches = latent_activations(model, tokenizer, corpus["input_ids"].tolist(), sae_scores(saes, latents),
                                 sorted(latents), section["batch_size"], progress=True)
    windows = top_windows(density.observe(batches), tokenizer, window=section["window"],
                          per_component=section["per_component"], signs=("positive",),
                          random_per_component=section["random_per_component"], seed=section["seed"])
    to_latent = {(layer, column): latent for layer, ids in latents.items() for column, latent in enumerate(ids)}
    windows["component"] = [to_latent[int(layer), int(c)] for layer, c in zip(windows["layer"], windows["component"])]
    windows = windows.rename(columns={"component": "latent"})
    rates = density.rates()
    densities = pd.DataFrame(
        [(layer, latent, float(rates[layer][column])) for (layer, column), latent in to_latent.items()],
        columns=["layer", "latent", "corpus_density"],
    )
    meta = provenance("sae_windows", section, densities=densities.to_dict("list"))
    write_parquet(windows, out_path, meta)


def _sae_widths(scores: pd.DataFrame) -> dict[int, int]:
    return {int(layer): int(n) + 1 for layer, n in scores.groupby("layer")["latent"].max().items()}


def select_sae_stage(variant: str, task: str, scores_path: Path, n_layers: int, section: dict[str, Any],
                     manual_path: Path | None, out_path: Path) -> None:
    """One selected-latent list: ``manual`` (the YAML's ``sae:`` section), ``top`` (the `top_k` largest
    effects over all layers) or ``random/seed{N}`` (the manual counts per layer, drawn from the top latents)."""
    scores = pd.read_parquet(scores_path)
    if variant == "manual":
        selection = load_manual_selection(manual_path, "sae", n_layers=n_layers, n_ids=_sae_widths(scores))
    elif variant == "top":
        best = scores.nsmallest(section["top_k"], "rank")
        counts = best.groupby("layer").size().to_dict()
        selection = top_selection(scores, counts, method="sae", task=task, id_column="latent", rank_column="rank",
                                  provenance={"global_top_k": section["top_k"]})
    elif variant.startswith("random/seed"):
        pool = scores[scores["top"]]
        candidates = {int(layer): group["latent"].astype(int).tolist() for layer, group in pool.groupby("layer")}
        counts = {int(layer): count for layer, count in section["counts"].items()}
        selection = random_selection(candidates, counts, int(variant.removeprefix("random/seed")), method="sae",
                                     task=task, provenance={"counts_from": "manual", "pool": "attribution top"})
    else:
        raise ConfigError(f"unknown sae selector variant '{variant}'; expected manual, top or random/seed<N>")
    log.info("sae %s: %d latents over layers %s", variant, selection.count(), sorted(selection.layers))
    selection.save(out_path)


def sae_spec_stage(method: str, selection_path: Path, sae_dirs: Mapping[int, Path], out_path: Path,
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


def sae_dashboard_stage(task: str, windows_path: Path, scores_path: Path, report_paths: list[Path],
                        selection_paths: dict[str, Path], out_path: Path, explanations_path: Path | None = None) -> None:
    """Latents with the largest attribution effects, their windows, explanations and selection status,
    plus the SAE training report and the check of the attribution estimate against exact ablation."""
    selections = {name: Selection.load(path) for name, path in selection_paths.items()}
    scores = pd.read_parquet(scores_path)
    densities = pd.DataFrame(read_parquet_metadata(windows_path)["densities"])
    summary = scores[scores["top"]].merge(densities, on=["layer", "latent"], how="left").sort_values("rank")
    summary, explained = with_explanations(summary, explanations_path, "latent")
    report = pd.concat([pd.read_parquet(path) for path in report_paths], ignore_index=True)
    validation = read_parquet_metadata(scores_path).get("validation", {})
    tables = [
        ("SAEs (training report on held-out corpus tokens)", report),
        ("Attribution estimate vs exact ablation (top latents)", pd.DataFrame([validation])),
    ]
    html = render_dashboard(
        f"SAE latents — {task}", pd.read_parquet(windows_path), summary, selections, id_column="latent",
        card_fields=[*SCORE_CARD_FIELDS, *explained], tables=tables,
    )
    write_dashboard(html, out_path)
