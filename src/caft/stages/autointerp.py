"""Stages of `rules/autointerp.smk`, shared by PCA and SAE candidates: explanations, simulation scores
and relevance of each candidate's windows, and the threshold selector built on them."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from caft.ablation.selection import AutoSelectConfig, auto_selection
from caft.artifacts import provenance, write_parquet
from caft.config import TOKEN_SUMMARY
from caft.errors import ConfigError
from caft.interpret.clients import job_record, make_client
from caft.interpret.explanations import ExplainConfig, explain_candidates, load_embedder, summarize_candidates

log = logging.getLogger(__name__)

ID_COLUMNS = {"pca": "component", "sae": "latent"}
"""``explanations.client: {client: tokens}``: deterministic token summaries instead of an LLM."""


def id_column(method: str) -> str:
    if method not in ID_COLUMNS:
        raise ConfigError(f"explanations exist for methods {sorted(ID_COLUMNS)}, not {method!r}")
    return ID_COLUMNS[method]


def best_ranked(windows: pd.DataFrame, scores_path: Path | None, n: int) -> pd.DataFrame:
    """The windows of the `n` latents with the best attribution rank in the scores table."""
    if scores_path is None:
        raise ConfigError("explaining SAE latents needs the attribution scores (scores_path)")
    scores = pd.read_parquet(scores_path, columns=["layer", "latent", "rank"])
    best = scores.merge(windows[["layer", "latent"]].drop_duplicates(), on=["layer", "latent"])
    best = best.nsmallest(n, "rank")[["layer", "latent"]]
    return windows.merge(best, on=["layer", "latent"])


def explain(method: str, task: str, cfg: ExplainConfig, query: str, windows_path: Path, out_path: Path,
            scores_path: Path | None = None) -> None:
    """Explanation, simulation score and relevance of every candidate (PCs: each end) with windows.

    Candidates are limited because a CPU LLM explaining every one would dominate the job: PCs to the
    first ``pca_components`` components of each layer, SAE latents to the ``sae_latents`` best
    attribution ranks (read from `scores_path`). Every LLM answer is kept in the job's record beside
    `out_path` until the table is written, so a killed job resumes where it stopped.
    """
    column = id_column(method)
    windows = pd.read_parquet(windows_path)
    if method == "pca":
        windows = windows[windows[column] < cfg.pca_components]
    else:
        windows = best_ranked(windows, scores_path, cfg.sae_latents)
    with job_record(out_path) as record:
        if cfg.client.get("client") == TOKEN_SUMMARY:
            explained = summarize_candidates(windows, column, load_embedder(), query, max_windows=cfg.max_windows,
                                             simulate_windows=cfg.simulate_windows)
        else:
            explained = explain_candidates(windows, column, make_client(cfg.client, record), load_embedder(), query,
                                           max_windows=cfg.max_windows, simulate_windows=cfg.simulate_windows,
                                           max_tokens=cfg.max_tokens, progress=True)
        log.info("%s %s: %d explanations; mean simulation score %.3f, mean relevance %.3f", task, method,
                 len(explained), explained["simulation_score"].mean(), explained["relevance_explanation"].mean())
        write_parquet(explained, out_path, provenance("explanations", cfg, method=method, task=task, query=query))


def auto_select(method: str, task: str, cfg: AutoSelectConfig, explained_path: Path, out_path: Path) -> None:
    """The ``auto`` selector: thresholds on relevance and simulation score, with how many each keeps."""
    selection, counts = auto_selection(
        pd.read_parquet(explained_path), id_column=id_column(method), method=method, task=task,
        min_relevance=cfg.min_relevance, min_score=cfg.min_score, max_per_layer=cfg.max_per_layer,
    )
    log.info("%s auto: of %d candidates, %d pass relevance >= %s, %d pass score >= %s, %d both, %d selected",
             method, counts["candidates"], counts["relevance"], cfg.min_relevance, counts["score"],
             cfg.min_score, counts["both"], counts["selected"])
    if not selection.count():
        log.warning("%s auto selection for %s is empty: its runs ablate nothing (lower selection.auto's "
                    "thresholds to select more)", method, task)
    selection.save(out_path)
