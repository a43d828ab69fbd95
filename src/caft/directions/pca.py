"""Principal components of the per-token activation differences tuned − base.

As in the reference: eigendecomposition (`torch.linalg.eigh`, float64) of each layer's covariance,
eigenvalues descending, top k (20) eigenvectors kept as unit columns.

Signs are arbitrary: an eigenvector v and −v describe the same component. The sign is fixed only so
that reruns give identical files (the entry of largest magnitude is made positive); it carries no
meaning, which is why dashboards show both the most-positive and the most-negative windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from caft.artifacts import load_tensors, save_tensors
from caft.config import SectionConfig
from caft.directions.moments import StreamingMoments
from caft.errors import ConfigError, DataError

COMPONENTS_FORMAT = "caft.pca_components/1"
"""Stored in every components file, so that an unrelated safetensors file is rejected by name."""

SUMMARY_COLUMNS = (
    "layer", "component", "eigenvalue", "explained_variance_ratio", "cumulative_ratio", "global_rank"
)


@dataclass(frozen=True)
class PcaComponentsConfig(SectionConfig):
    """How many top components per layer `pca_components` keeps."""

    SECTION: ClassVar[str] = "pca"

    components: int


def top_components(
    moments: StreamingMoments, k: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vectors [d, k] float32 unit columns, eigenvalues [k], explained ratios [k]), descending.

    Eigenvalues and ratios are float64. Tiny negative eigenvalues are round-off of a PSD matrix and
    are clamped to 0. The ratio is eigenvalue / total variance (the trace); all zeros when the total is
    0 (tuned == base). Among equal eigenvalues the basis is whatever `eigh` returns (deterministic on
    one platform, meaningless in any case).
    """
    if not isinstance(k, int) or not 1 <= k <= moments.dim:
        raise ConfigError(f"number of components must be an integer in 1..{moments.dim}, got {k!r}")
    eigenvalues, eigenvectors = torch.linalg.eigh(moments.covariance.cpu())
    eigenvalues = eigenvalues.flip(0).clamp_min(0.0)
    vectors = eigenvectors.flip(1)[:, :k]
    columns = torch.arange(k)
    signs = torch.sign(vectors[vectors.abs().argmax(dim=0), columns])
    vectors = vectors * torch.where(signs == 0, 1.0, signs)
    total = eigenvalues.sum()
    ratios = eigenvalues[:k] / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    return vectors.float(), eigenvalues[:k], ratios


def fit_pca(
    moments_by_layer: Mapping[int, StreamingMoments], k: int = 20
) -> tuple[dict[int, torch.Tensor], pd.DataFrame]:
    """Top-k components of every layer, and one summary row per (layer, component).

    ``global_rank`` (0 = largest) ranks the eigenvalues over all layers, ties broken by (layer,
    component); it is the order of a "top components by variance" baseline. Raw eigenvalues are not
    normalised per layer, so deeper layers (larger residual norms) tend to rank first.
    """
    if not moments_by_layer:
        raise DataError("no layers to fit PCA on")
    components: dict[int, torch.Tensor] = {}
    rows = []
    for layer in sorted(moments_by_layer):
        vectors, eigenvalues, ratios = top_components(moments_by_layer[layer], k)
        components[layer] = vectors
        cumulative = torch.cumsum(ratios, dim=0)
        rows.extend(
            {
                "layer": layer,
                "component": index,
                "eigenvalue": float(eigenvalues[index]),
                "explained_variance_ratio": float(ratios[index]),
                "cumulative_ratio": float(cumulative[index]),
            }
            for index in range(k)
        )
    summary = pd.DataFrame(rows)
    order = summary.sort_values(
        ["eigenvalue", "layer", "component"], ascending=[False, True, True], kind="stable"
    ).index
    ranks = np.empty(len(summary), dtype=np.int64)
    ranks[order.to_numpy()] = np.arange(len(summary))
    summary["global_rank"] = ranks
    return components, summary[list(SUMMARY_COLUMNS)]


def save_components(components: Mapping[int, torch.Tensor], path: str | Path, metadata: dict[str, Any]) -> None:
    """Tensors ``layer_{L}`` [d, k] float32; ``metadata`` (k, include_bos, provenance) as JSON."""
    save_tensors({f"layer_{layer}": vectors.float() for layer, vectors in components.items()},
                 path, COMPONENTS_FORMAT, metadata)


def load_components(path: str | Path) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Inverse of `save_components`: (layer -> [d, k] float32, metadata)."""
    tensors, metadata = load_tensors(path, COMPONENTS_FORMAT)
    components: dict[int, torch.Tensor] = {}
    for name, tensor in tensors.items():
        layer = name.removeprefix("layer_")
        if not layer.isdigit() or tensor.ndim != 2:
            raise DataError(f"{path}: unexpected tensor {name!r} of shape {tuple(tensor.shape)}")
        components[int(layer)] = tensor
    return dict(sorted(components.items())), metadata
