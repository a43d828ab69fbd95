"""PCA of streaming moments: planted directions are recovered, the summary ranks them, files round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from caft.directions.moments import StreamingMoments, save_moments
from caft.directions.pca import fit_pca, load_components, save_components, top_components
from caft.errors import ConfigError, DataError

D = 16
VARIANCES = torch.tensor([9.0, 4.0, 1.0], dtype=torch.float64)
NOISE = 0.01


def planted(seed: int, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """x = mean + Σ_i a_i u_i + noise, a_i ~ N(0, VARIANCES[i]); returns (x [n, D], u [D, 3])."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(D, 3, generator=gen, dtype=torch.float64))
    a = torch.randn(n, 3, generator=gen, dtype=torch.float64) * VARIANCES.sqrt()
    noise = NOISE * torch.randn(n, D, generator=gen, dtype=torch.float64)
    return 5.0 + a @ u.T + noise, u


def moments_of(x: torch.Tensor, chunk: int = 512) -> StreamingMoments:
    moments = StreamingMoments(x.shape[1])
    for start in range(0, len(x), chunk):
        moments.update(x[start : start + chunk])
    return moments


def test_top_components_recover_planted_directions() -> None:
    x, u = planted(seed=0)
    vectors, eigenvalues, ratios = top_components(moments_of(x), k=4)
    assert vectors.shape == (D, 4) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(4), rtol=0, atol=1e-5)
    cosines = (vectors[:, :3].double() * u).sum(dim=0).abs()
    assert (cosines > 0.99).all(), cosines
    assert torch.all(eigenvalues[:-1] >= eigenvalues[1:])
    total = VARIANCES.sum() + D * NOISE**2
    torch.testing.assert_close(ratios[:3], VARIANCES / total, rtol=0.1, atol=0)
    torch.testing.assert_close(ratios, eigenvalues / torch.cov(x.T, correction=0).trace())
    assert ratios[3] < 1e-4


def test_sign_convention_is_deterministic() -> None:
    x, _ = planted(seed=1)
    vectors, _, _ = top_components(moments_of(x), k=3)
    largest = vectors[vectors.abs().argmax(dim=0), torch.arange(3)]
    assert (largest > 0).all()
    flipped, _, _ = top_components(moments_of(-x, chunk=999), k=3)
    torch.testing.assert_close(flipped, vectors, rtol=0, atol=1e-6)


def test_top_components_edge_cases() -> None:
    zero = StreamingMoments(4)
    zero.update(torch.ones(3, 4))
    _, eigenvalues, ratios = top_components(zero, k=2)
    assert torch.equal(eigenvalues, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(ratios, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match="1..4"):
        top_components(zero, k=5)
    with pytest.raises(DataError, match="no vectors"):
        top_components(StreamingMoments(4), k=1)


def test_fit_pca_summary_ranks_over_layers() -> None:
    x, _ = planted(seed=2)
    moments = {4: moments_of(x), 2: moments_of(2.5 * x)}
    components, summary = fit_pca(moments, k=3)
    assert sorted(components) == [2, 4]
    assert list(summary.columns) == [
        "layer", "component", "eigenvalue", "explained_variance_ratio", "cumulative_ratio", "global_rank"
    ]
    assert summary[["layer", "component"]].values.tolist() == [[2, 0], [2, 1], [2, 2], [4, 0], [4, 1], [4, 2]]
    # eigenvalues: layer 2 ≈ 6.25 × (9, 4, 1), layer 4 ≈ (9, 4, 1)
    ranked = summary.sort_values("global_rank")
    assert ranked["global_rank"].tolist() == list(range(6))
    assert ranked["eigenvalue"].is_monotonic_decreasing
    assert ranked[["layer", "component"]].values.tolist() == [[2, 0], [2, 1], [4, 0], [2, 2], [4, 1], [4, 2]]
    for _, group in summary.groupby("layer"):
        cumulative = group["explained_variance_ratio"].cumsum()
        torch.testing.assert_close(torch.tensor(group["cumulative_ratio"].values), torch.tensor(cumulative.values))
    # scaling the data scales eigenvalues but neither ratios nor (up to round-off) directions
    torch.testing.assert_close(components[2], components[4], rtol=0, atol=1e-5)


def test_components_save_load_round_trip(tmp_path: Path) -> None:
    x, _ = planted(seed=3)
    components, _ = fit_pca({0: moments_of(x), 5: moments_of(x[:100])}, k=2)
    path = tmp_path / "components.safetensors"
    save_components(components, path, {"k": 2, "include_bos": False})
    loaded, metadata = load_components(path)
    assert metadata == {"k": 2, "include_bos": False}
    assert list(loaded) == [0, 5]
    for layer, vectors in components.items():
        assert torch.equal(loaded[layer], vectors)
    save_moments({0: moments_of(x)}, tmp_path / "moments.safetensors", {})
    with pytest.raises(DataError, match="caft.pca_components"):
        load_components(tmp_path / "moments.safetensors")
