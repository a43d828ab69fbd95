"""Stage functions of automatic interpretation (DESIGN §1 steps 2–3), shared by PCA and SAE candidates:
explain each candidate's windows with an LLM, score and rate the explanations, and select by threshold.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from caft.artifacts import provenance, write_parquet
from caft.errors import ConfigError
from caft.explanations import explain_candidates, load_embedder, summarize_candidates
from caft.llm import make_client
from caft.selection import auto_selection

log = logging.getLogger(__name__)

ID_COLUMNS = {"pca": "component", "sae": "latent"}
TOKEN_SUMMARY = "tokens"
"""``explanations.client: {client: tokens}``: deterministic token summaries instead of an LLM."""


def id_column(method: str) -> str:
    if method not in ID_COLUMNS:
        raise ConfigError(f"explanations exist for methods {sorted(ID_COLUMNS)}, not {method!r}")
    return ID_COLUMNS[method]


def explain_stage(method: str, task: str, windows_path: Path, section: dict[str, Any], query: str,
                  out_path: Path, scores_path: Path | None = None) -> None:
    """Explanation, simulation score and relevance of every candidate (PCs: each end) with windows.

    Candidates are limited because a CPU LLM explaining every one would dominate the job: PCs to the
    first ``pca_components`` components of each layer, SAE latents to the ``sae_latents`` best
    attribution ranks (read from `scores_path`).
    """
    column = id_column(method)
    windows = pd.read_parquet(windows_path)
    if method == "pca":
        windows = windows[windows[column] < section["pca_components"]]
    else:
        windows = best_ranked(windows, scores_path, section["sae_latents"])
    if section["client"].get("client") == TOKEN_SUMMARY:
        explained = summarize_candidates(windows, column, load_embedder(), query, max_windows=section["max_windows"],
                                         simulate_windows=section["simulate_windows"])
    else:
        client = make_client(section["client"])
        explained = explain_candidates(windows, column, client, load_embedder(), query,
                                       max_windows=section["max_windows"],
                                       simulate_windows=section["simulate_windows"],
                                       max_tokens=section["max_tokens"], progress=True)
    log.info("%s %s: %d explanations; mean simulation score %.3f, mean relevance %.3f", task, method,
             len(explained), explained["simulation_score"].mean(), explained["relevance_explanation"].mean())
    write_parquet(explained, out_path, provenance("explanations", section, method=method, task=task, query=query))


def best_ranked(windows: pd.DataFrame, scores_path: Path | None, n: int) -> pd.DataFrame:
    """The windows of the `n` latents with the best attribution rank in the scores table."""
    if scores_path is None:
        raise ConfigError("explaining SAE latents needs the attribution scores (scores_path)")
    scores = pd.read_parquet(scores_path, columns=["layer", "latent", "rank"])
    best = scores.merge(windows[["layer", "latent"]].drop_duplicates(), on=["layer", "latent"])
    best = best.nsmallest(n, "rank")[["layer", "latent"]]
    return windows.merge(best, on=["layer", "latent"])


def auto_select_stage(method: str, task: str, explained_path: Path, section: dict[str, Any], out_path: Path) -> None:
    """The ``auto`` selector: thresholds on relevance and simulation score, with how many each keeps."""
    selection, counts = auto_selection(
        pd.read_parquet(explained_path), id_column=id_column(method), method=method, task=task,
        min_relevance=section["min_relevance"], min_score=section["min_score"],
        max_per_layer=section["max_per_layer"],
    )
    log.info("%s auto: of %d candidates, %d pass relevance >= %s, %d pass score >= %s, %d both, %d selected",
             method, counts["candidates"], counts["relevance"], section["min_relevance"], counts["score"],
             section["min_score"], counts["both"], counts["selected"])
    if not selection.count():
        log.warning("%s auto selection for %s is empty: its runs ablate nothing (lower selection.auto's "
                    "thresholds to select more)", method, task)
    selection.save(out_path)
