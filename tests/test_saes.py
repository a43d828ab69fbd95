"""SAE training, evaluation, atomic saving and offline pretrained loading (`caft.directions.saes`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from caft.directions.sae_folders import load_local_sae, load_sae_folders, save_sae
from caft.directions.saes import (
    SaeTrainConfig,
    evaluate_sae,
    load_pretrained_sae,
    sae_layer_id,
    train_sae,
)
from caft.errors import ConfigError, DataError, ModelLoadError
from tests.config_helpers import check_section
from tests.fixtures_models import use_offline_hub

D_IN = 32
ATOMS = 64
ACTIVE = 4

GEMMA_RELEASE = "gemma-scope-2b-pt-res-canonical"
GEMMA_ID = "layer_5/width_16k/canonical"
GEMMA_REPO = "google/gemma-scope-2b-pt-res"
GEMMA_FILE = "layer_5/width_16k/average_l0_68/params.npz"
GEMMA_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
TINY_GEMMA = {"d_in": 16, "d_sae": 32}

REPORT_KEYS = {
    "architecture", "d_in", "d_sae", "k", "tokens", "steps", "seconds", "tokens_per_second",
    "fvu", "l0", "dead_fraction", "train_rows", "holdout_rows",
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices: one thread is faster than two on a shared 2-core machine, and timings are steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def planted(seed: int, n: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """x = Σ_j s_j D_j: ACTIVE of ATOMS unit-norm atoms per row, magnitudes in [1, 2); returns (x, D)."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(ATOMS, D_IN, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    chosen = torch.rand(n, ATOMS, generator=gen).argsort(dim=1)[:, :ACTIVE]
    codes = torch.zeros(n, ATOMS).scatter_(1, chosen, 1 + torch.rand(n, ACTIVE, generator=gen))
    return codes @ atoms, atoms


def recovered_fraction(sae: Any, atoms: torch.Tensor, cosine: float = 0.9) -> float:
    """Fraction of planted atoms that some decoder row matches with cosine >= `cosine`."""
    rows = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    return ((atoms @ rows.T).max(dim=1).values >= cosine).float().mean().item()


def small_config(**overrides: Any) -> SaeTrainConfig:
    values: dict[str, Any] = {"width": 128, "k": 4, "tokens": 300 * 512, "batch_size": 512, "lr": 1e-2,
                              "holdout_fraction": 0.1, "seed": 0}
    return SaeTrainConfig.from_config({**values, **overrides})


# --- training ---------------------------------------------------------------------------------------


def test_topk_sae_recovers_planted_dictionary() -> None:
    x, atoms = planted(seed=0)
    sae, report = train_sae(x, small_config(), hook_name="model.layers.0", model_name="planted")
    assert report["fvu"] < 0.1
    assert recovered_fraction(sae, atoms) >= 0.8
    assert report["l0"] == pytest.approx(4.0)
    assert set(report) == REPORT_KEYS
    assert (report["steps"], report["tokens"], report["d_in"], report["d_sae"]) == (300, 300 * 512, D_IN, 128)
    assert (report["train_rows"], report["holdout_rows"]) == (8192 - 819, 819)
    assert type(sae).__name__ == "TopKSAE"
    assert (sae.cfg.metadata.hook_name, sae.cfg.metadata.model_name) == ("model.layers.0", "planted")
    assert sae.cfg.normalize_activations == "none"  # the training normalisation is folded into the weights

    untrained, untrained_report = train_sae(
        x, small_config(tokens=512, lr=1e-6), hook_name="model.layers.0", model_name="planted"
    )
    assert untrained_report["fvu"] > 0.5
    assert recovered_fraction(untrained, atoms) < 0.5


def test_training_is_deterministic_and_leaves_global_rng_alone() -> None:
    x, _ = planted(seed=1, n=2048)
    cfg = small_config(tokens=40 * 256, batch_size=256)
    before = torch.get_rng_state()
    first, first_report = train_sae(x, cfg, hook_name="h", model_name="m")
    assert torch.equal(torch.get_rng_state(), before)
    second, second_report = train_sae(x, cfg, hook_name="h", model_name="m")
    other, _ = train_sae(x, small_config(tokens=40 * 256, batch_size=256, seed=1), hook_name="h", model_name="m")
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.W_dec, other.W_dec)
    assert first_report["fvu"] == second_report["fvu"]


@pytest.mark.parametrize(
    ("section", "inference_class"),
    [
        ({"architecture": "batchtopk", "k": 4}, "JumpReLUSAE"),
        ({"architecture": "standard", "l1_coefficient": 1.0}, "StandardSAE"),
        ({"architecture": "jumprelu", "l0_coefficient": 0.1}, "JumpReLUSAE"),
    ],
)
def test_other_architectures_train_and_save(section: dict[str, Any], inference_class: str, tmp_path: Path) -> None:
    x, _ = planted(seed=2, n=1024)
    cfg = SaeTrainConfig.from_config({**section, "width": 64, "tokens": 30 * 256, "batch_size": 256, "lr": 1e-2,
                                      "holdout_fraction": 0.0})
    sae, report = train_sae(x, cfg, hook_name="h", model_name="m")
    assert type(sae).__name__ == inference_class
    assert report["holdout_rows"] == 0 and report["train_rows"] == 1024
    assert report["k"] == (4 if section["architecture"] == "batchtopk" else None)
    assert report["fvu"] == pytest.approx(evaluate_sae(sae, x)["fvu"])  # no holdout: measured on all rows
    save_sae(sae, tmp_path / "sae")
    reloaded = load_local_sae(tmp_path / "sae")
    assert torch.equal(reloaded.encode(x), sae.encode(x))


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    x, _ = planted(seed=3, n=512)
    train_sae(x, small_config(tokens=4 * 128, batch_size=128, holdout_fraction=0.0),
              hook_name="blocks.3", model_name="m", progress=True)
    assert "SAE blocks.3" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("activations", "message"),
    [
        (torch.zeros(10), "float tensor"),
        (torch.zeros(10, 4, dtype=torch.long), "float tensor"),
        (torch.zeros(0, 4), "empty"),
        (torch.full((10, 4), float("nan")), "NaN"),
        (torch.zeros(64, 4), "all zero"),
    ],
)
def test_train_rejects_bad_activations(activations: torch.Tensor, message: str) -> None:
    with pytest.raises(DataError, match=f"model.layers.3.*{message}"):
        train_sae(activations, small_config(width=8, tokens=32, batch_size=32, holdout_fraction=0.0),
                  hook_name="model.layers.3", model_name="m")


def test_holdout_too_small_is_named() -> None:
    with pytest.raises(DataError, match="holdout_fraction"):
        train_sae(torch.randn(10, 4), small_config(width=8, tokens=8, batch_size=8), hook_name="h", model_name="m")


# --- evaluation -------------------------------------------------------------------------------------


def identity_sae(d: int = 4) -> Any:
    """A StandardSAE with latents ±x_i: ReLU(x)·I + ReLU(−x)·(−I) reconstructs x exactly."""
    import sae_lens

    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=d, d_sae=2 * d, apply_b_dec_to_input=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_evaluate_exact_reconstruction() -> None:
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    x[:, 2] = 0.0  # latents 2 (+x2) and 6 (−x2) never fire
    x[:, 3] = x[:, 3].abs()  # latent 7 (−x3) never fires
    metrics = evaluate_sae(identity_sae(), x, batch_size=7)
    assert metrics["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["l0"] == pytest.approx(3.0)
    assert metrics["dead_fraction"] == pytest.approx(3 / 8)


def test_evaluate_mean_reconstruction_has_fvu_one() -> None:
    x = 3.0 + torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    sae = identity_sae()
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(x.double().mean(0).float())
    assert evaluate_sae(sae, x)["fvu"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_needs_variance() -> None:
    with pytest.raises(DataError, match="zero variance"):
        evaluate_sae(identity_sae(), torch.ones(5, 4))
    with pytest.raises(DataError, match="at least 2 rows"):
        evaluate_sae(identity_sae(), torch.ones(1, 4))
    with pytest.raises(DataError, match="layer 7: activations have width 5, the SAE expects d_in = 4"):
        evaluate_sae(identity_sae(), torch.randn(3, 5), where="layer 7")


# --- saving -----------------------------------------------------------------------------------------


def test_save_round_trip_and_replace(tmp_path: Path, sae_factory: Callable[..., Path]) -> None:
    import sae_lens

    x = torch.randn(20, 32, generator=torch.Generator().manual_seed(0))
    out = tmp_path / "saes" / "layer_0"
    for seed in (0, 1):  # the second save replaces the first folder
        sae = load_local_sae(sae_factory("jumprelu", seed=seed))
        save_sae(sae, out)
        reloaded = sae_lens.SAE.load_from_disk(out)
        assert torch.equal(reloaded.encode(x), sae.encode(x))
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    assert [p.name for p in out.parent.iterdir()] == ["layer_0"]


def test_save_training_sae_writes_inference_model(tmp_path: Path) -> None:
    import sae_lens

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=8, d_sae=16, k=3))
        torch.nn.init.normal_(sae.b_enc)
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    save_sae(sae, tmp_path / "sae")
    reloaded = load_local_sae(tmp_path / "sae")
    assert type(reloaded).__name__ == "TopKSAE"
    torch.testing.assert_close(reloaded.decode(reloaded.encode(x)), sae.decode(sae.encode(x)))


def test_interrupted_save_leaves_nothing_behind(
    tmp_path: Path, sae_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sae_lens.saes.sae as sae_module

    sae = load_local_sae(sae_factory("topk"))
    real_save_file = sae_module.save_file

    def weights_then_crash(*args: Any, **kwargs: Any) -> None:
        real_save_file(*args, **kwargs)
        raise KeyboardInterrupt("killed after the weights were written")

    parent = tmp_path / "saes"
    monkeypatch.setattr(sae_module, "save_file", weights_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_sae(sae, parent / "layer_0")
    assert list(parent.iterdir()) == []

    monkeypatch.setattr(sae_module, "save_file", real_save_file)
    save_sae(sae, parent / "layer_0")
    before = {p.name: p.read_bytes() for p in (parent / "layer_0").iterdir()}
    monkeypatch.setattr(sae_module, "save_file", weights_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_sae(load_local_sae(sae_factory("standard")), parent / "layer_0")
    assert [p.name for p in parent.iterdir()] == ["layer_0"]
    assert {p.name: p.read_bytes() for p in (parent / "layer_0").iterdir()} == before


def damage(folder: Path, how: str) -> Path:
    """`folder`, a saved SAE, broken in one of the ways a folder on disk can be."""
    if how == "missing folder":
        return folder.parent / "nowhere"
    if how == "no weights":
        (folder / "sae_weights.safetensors").unlink()
    elif how == "unknown architecture":
        (folder / "cfg.json").write_text(json.dumps({"architecture": "no-such-architecture", "d_in": 4}))
    elif how == "cfg not json":
        (folder / "cfg.json").write_text("{not json")
    elif how == "truncated weights":
        weights = folder / "sae_weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    return folder


@pytest.mark.parametrize(("how", "message"), [
    ("missing folder", r"lacks \['cfg.json', 'sae_weights.safetensors'\]"),
    ("no weights", r"lacks \['sae_weights.safetensors'\]"),
    ("unknown architecture", "cannot load SAE from"),
    ("cfg not json", "cannot load SAE from"),
    ("truncated weights", "cannot load SAE from"),
])
def test_bad_sae_folders_are_model_load_errors_naming_the_folder(
    sae_factory: Callable[..., Path], how: str, message: str
) -> None:
    folder = damage(sae_factory("topk"), how)
    for load in (load_local_sae, lambda path: load_sae_folders({0: path}, "cpu")):
        with pytest.raises(ModelLoadError, match=message) as error:
            load(folder)
        assert str(folder) in str(error.value)


def test_folders_load_in_float32_frozen_and_in_eval_mode(tmp_path: Path) -> None:
    """A folder saved in bfloat16 still loads as float32 (`SAE_DTYPE`), its values exactly upcast."""
    import sae_lens

    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=ATOMS, k=4, dtype="bfloat16"))
    sae.save_model(tmp_path / "bf16")
    assert load_local_sae(tmp_path / "bf16").W_dec.dtype == torch.float32
    (loaded,) = load_sae_folders({3: tmp_path / "bf16"}, "cpu").values()
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in loaded.parameters())
    assert not loaded.training
    torch.testing.assert_close(loaded.W_dec, sae.W_dec.detach().float(), rtol=0, atol=0)


# --- pretrained (Gemma Scope layout, offline) -------------------------------------------------------


@pytest.fixture
def tiny_gemma_scope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """A hub cache holding a tiny Gemma Scope `params.npz`; the release's config says d_in 16, d_sae 32.

    Only the size overrides are patched: the registry lookup, the gemma_2 converter, `hf_hub_download`
    from the cache and the npz key renaming are sae-lens's real code.
    """
    import sae_lens.saes.sae as sae_module

    gen = np.random.default_rng(0)
    d_in, d_sae = TINY_GEMMA["d_in"], TINY_GEMMA["d_sae"]
    params = {
        "W_enc": gen.standard_normal((d_in, d_sae)).astype(np.float32),
        "W_dec": gen.standard_normal((d_sae, d_in)).astype(np.float32),
        "b_enc": gen.standard_normal(d_sae).astype(np.float32),
        "b_dec": gen.standard_normal(d_in).astype(np.float32),
        "threshold": gen.uniform(0, 0.5, d_sae).astype(np.float32),
    }
    home = tmp_path / "hf_home"
    repo = home / "hub" / f"models--{GEMMA_REPO.replace('/', '--')}"
    target = repo / "snapshots" / GEMMA_COMMIT / GEMMA_FILE
    target.parent.mkdir(parents=True)
    np.savez(target, **params)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(GEMMA_COMMIT)
    use_offline_hub(monkeypatch, home)
    real_overrides = sae_module.get_config_overrides
    monkeypatch.setattr(sae_module, "get_config_overrides",
                        lambda release, sae_id: {**real_overrides(release, sae_id), **TINY_GEMMA})
    return params


def test_pretrained_gemma_scope_loads_offline_and_round_trips(
    tiny_gemma_scope: dict[str, np.ndarray], tmp_path: Path
) -> None:
    sae = load_pretrained_sae(GEMMA_RELEASE, sae_layer_id("layer_{layer}/width_16k/canonical", 5))
    assert type(sae).__name__ == "JumpReLUSAE"
    assert sae.cfg.metadata.hook_name == "blocks.5.hook_resid_post"
    assert not sae.cfg.apply_b_dec_to_input
    for name, array in tiny_gemma_scope.items():
        assert torch.equal(getattr(sae, name).detach(), torch.from_numpy(array)), name

    save_sae(sae, tmp_path / "layer_5")
    reloaded = load_local_sae(tmp_path / "layer_5")
    x = torch.randn(8, TINY_GEMMA["d_in"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(reloaded.encode(x), sae.encode(x))
    assert reloaded.cfg.metadata.hook_name == "blocks.5.hook_resid_post"


def test_pretrained_cache_miss_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_offline_hub(monkeypatch, tmp_path / "empty_hf_home")
    with pytest.raises(ModelLoadError, match=r"not in the local Hugging Face cache .* HF_HUB_OFFLINE is set") as info:
        load_pretrained_sae(GEMMA_RELEASE, GEMMA_ID)
    assert GEMMA_RELEASE in str(info.value) and GEMMA_ID in str(info.value)


@pytest.mark.parametrize(
    ("release", "sae_id", "named"),
    [("no-such-release", GEMMA_ID, "no-such-release"), (GEMMA_RELEASE, "layer_99/width_16k/canonical", "layer_99")],
)
def test_pretrained_registry_miss_is_named(release: str, sae_id: str, named: str) -> None:
    with pytest.raises(ModelLoadError, match=named):
        load_pretrained_sae(release, sae_id)


# --- config -----------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = SaeTrainConfig.from_config({"lr": 4e-4})
    assert (cfg.architecture, cfg.lr_end) == ("topk", pytest.approx(4e-5))
    assert SaeTrainConfig.from_config({"lr": 4e-4, "lr_end": 0.0}).lr_end == 0.0
    # the config schema fills in k for every architecture, so it is accepted (and unused) here
    assert SaeTrainConfig.from_config({"architecture": "standard", "k": 32, "width": 16}).architecture == "standard"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"widht": 10}, "widht"),
        ({"architecture": "gated"}, "architecture"),
        ({"width": 0}, "width"),
        ({"width": 8.0}, "width"),
        ({"k": True}, "k"),
        ({"l0_coefficient": 1.0}, "l0_coefficient"),
        ({"architecture": "jumprelu", "l1_coefficient": 1.0}, "l1_coefficient"),
        ({"architecture": "standard", "l1_coefficient": -1.0}, "l1_coefficient"),
        ({"lr": 0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"batch_size": -1}, "batch_size"),
        ({"holdout_fraction": 0.5}, "holdout_fraction"),
        ({"holdout_fraction": float("nan")}, "holdout_fraction"),
        ({"seed": -1}, "seed"),
        (["topk"], "saes.train"),
    ],
)
def test_schema_errors_name_the_key(section: Any, key: str) -> None:
    """The schema checks `saes.train` (config/schema.yaml): types, bounds, each coefficient's architecture."""
    with pytest.raises(ConfigError, match=f"{key}'"):
        check_section("saes.train", section)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"widht": 10}, "widht"),
        ({"width": 8, "k": 9}, "k"),
        ({"lr": 1e-3, "lr_end": 1e-2}, "lr_end"),
        ({"tokens": 100, "batch_size": 4096}, "tokens"),
    ],
)
def test_config_errors_name_the_key(section: dict[str, Any], key: str) -> None:
    """What the schema cannot say, bounds between keys (and an unknown key), SaeTrainConfig checks."""
    with pytest.raises(ConfigError, match=f"'{key}'"):
        SaeTrainConfig.from_config(section)


def test_sae_layer_id() -> None:
    assert sae_layer_id("layer_{layer}/width_16k/canonical", 12) == "layer_12/width_16k/canonical"
    with pytest.raises(ConfigError, match="must contain"):
        sae_layer_id("layer_5/width_16k/canonical", 5)
    with pytest.raises(ConfigError, match="placeholder"):
        sae_layer_id("layer_{layer}/{width}", 5)
    with pytest.raises(ConfigError, match="layer must be"):
        sae_layer_id("layer_{layer}", -1)
