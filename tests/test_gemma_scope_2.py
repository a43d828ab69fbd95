"""Gemma Scope 2 SAEs of Gemma 3 270M through `saes: {from: pretrained}`, offline against a hand-built hub cache.

The cache holds what sae-lens's `gemma_3` converter reads from `google/gemma-scope-2-270m-pt`: per SAE a folder
`<site>/<sae id>/` with `config.json` and `params.safetensors` (`w_enc` [d_in, d_sae], `w_dec` [d_sae, d_in],
`b_enc`, `b_dec`, `threshold`). The registry lookup, the converter and `hf_hub_download` are sae-lens's and
huggingface_hub's real code; the SAEs are tiny (the converter reads d_in and d_sae from the file) and random.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from snakemake.utils import update_config

from caft.config import check_config
from caft.directions.sae_folders import load_local_sae
from caft.directions.saes import SaeSourceConfig, load_pretrained_sae, pretrained_sae_id
from caft.errors import ConfigError, ModelLoadError
from caft.stages.sae import provision_sae
from tests.fixtures_models import use_offline_hub

ROOT = Path(__file__).resolve().parents[1]
REPO = "google/gemma-scope-2-270m-pt"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RELEASE = "gemma-scope-2-270m-pt-res"
RELEASE_ALL = "gemma-scope-2-270m-pt-res-all"
TEMPLATE = "layer_{layer}_width_16k_l0_small"
D_IN, D_SAE = 16, 32
FOLDERS = {  # (release, layer) -> the registry's path of its `TEMPLATE` SAE
    (RELEASE, 5): "resid_post/layer_5_width_16k_l0_small",
    (RELEASE_ALL, 4): "resid_post_all/layer_4_width_16k_l0_small",
    ("gemma-scope-2-270m-pt-mlp-all", 4): "mlp_out_all/layer_4_width_16k_l0_small",
}


def source_config(saes: dict[str, Any]) -> SaeSourceConfig:
    """The keys rule `provision_sae` passes (`config_keys("saes", ...)` in rules/sae.smk)."""
    return SaeSourceConfig.from_config({key: saes[key] for key in ("from", "release", "sae_id", "path", "train")
                                        if key in saes})


def overlay_source() -> SaeSourceConfig:
    return source_config(yaml.safe_load((ROOT / "config" / "gemma_scope_2.yaml").read_text())["saes"])


@pytest.fixture
def gemma_scope_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, torch.Tensor]]:
    """An offline hub cache holding `FOLDERS`, each a seeded random JumpReLU SAE; no request may reach the
    network (sae-lens's own shape lookup would make HTTP range requests)."""
    generator = torch.Generator().manual_seed(0)
    snapshot = tmp_path / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    params = {}
    for folder in FOLDERS.values():
        site = folder.partition("/")[0].removesuffix("_all")
        layer = int(folder.split("/")[1].split("_")[1])
        hook = {"resid_post": f"model.layers.{layer}.output",
                "mlp_out": f"model.layers.{layer}.post_feedforward_layernorm.output"}[site]
        params[folder] = {
            "w_enc": torch.randn(D_IN, D_SAE, generator=generator) / D_IN**0.5,
            "w_dec": torch.randn(D_SAE, D_IN, generator=generator),
            "b_enc": torch.randn(D_SAE, generator=generator) * 0.1,
            "b_dec": torch.randn(D_IN, generator=generator),
            "threshold": 0.2 + 0.6 * torch.rand(D_SAE, generator=generator),  # positive, as trained JumpReLUs'
        }
        (snapshot / folder).mkdir(parents=True)
        save_file(params[folder], snapshot / folder / "params.safetensors")
        config = {"width": D_SAE, "model_name": "google/gemma-3-270m-pt", "architecture": "jump_relu", "l0": 20,
                  "affine_connection": False, "hf_hook_point_in": hook, "hf_hook_point_out": hook, "type": "sae"}
        (snapshot / folder / "config.json").write_text(json.dumps(config))
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text(COMMIT)
    use_offline_hub(monkeypatch, tmp_path / "hf_home")

    def no_network(url: str, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network request to {url}")

    monkeypatch.setattr("requests.get", no_network)
    return params


def base_checkpoint(directory: Path, hidden_size: int) -> Path:
    """A model folder holding only the config `provision_sae` reads the hidden size from."""
    directory.mkdir()
    config = {"model_type": "gemma3_text", "hidden_size": hidden_size, "num_hidden_layers": 18}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def assert_jumprelu_by_hand(sae: Any, raw: dict[str, torch.Tensor]) -> None:
    """The converter sets apply_b_dec_to_input False and normalize_activations "none" (sae-lens's
    get_gemma_3_config_from_hf): the input goes into W_enc as it is, no b_dec subtracted, no rescaling."""
    assert not sae.cfg.apply_b_dec_to_input and sae.cfg.normalize_activations == "none"
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(1))
    pre = x @ raw["w_enc"] + raw["b_enc"]
    z = pre * (pre > raw["threshold"])
    assert ((pre > 0) & (pre <= raw["threshold"])).any(), "the threshold must zero some positive pre-activations"
    assert 0 < (z != 0).float().mean() < 1
    torch.testing.assert_close(sae.encode(x), z, rtol=0, atol=1e-6)
    torch.testing.assert_close(sae.decode(z), z @ raw["w_dec"] + raw["b_dec"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("release", "layer"), [(RELEASE, 5), (RELEASE_ALL, 4)])
def test_gemma_scope_2_loads_offline_as_jumprelu(
    gemma_scope_2: dict[str, dict[str, torch.Tensor]], release: str, layer: int
) -> None:
    sae = load_pretrained_sae(release, pretrained_sae_id(release, TEMPLATE, layer))
    assert type(sae).__name__ == "JumpReLUSAE"
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (D_IN, D_SAE)
    assert sae.cfg.metadata.hook_name == f"blocks.{layer}.hook_resid_post"  # the output of block `layer`
    assert sae.cfg.metadata.hf_hook_name == f"model.layers.{layer}.output"
    assert sae.cfg.metadata.model_name == "google/gemma-3-270m"
    assert_jumprelu_by_hand(sae, gemma_scope_2[FOLDERS[release, layer]])


def test_provision_sae_writes_the_overlays_sae(gemma_scope_2: dict[str, dict[str, torch.Tensor]],
                                               tmp_path: Path) -> None:
    """The overlay's own `saes` section through the stage: a sae-lens folder equal to the raw arrays."""
    cfg = overlay_source()
    out, report = tmp_path / "layer_4", tmp_path / "report.parquet"
    provision_sae(4, cfg, base_checkpoint(tmp_path / "base", D_IN), None, out, report)
    sae = load_local_sae(out)
    assert sae.cfg.metadata.hook_name == "blocks.4.hook_resid_post"
    assert_jumprelu_by_hand(sae, gemma_scope_2["resid_post_all/layer_4_width_16k_l0_small"])
    row = pd.read_parquet(report).iloc[0]
    assert (row["layer"], row["source"], row["architecture"], row["d_sae"]) == (4, "pretrained", "jumprelu", D_SAE)


def test_a_layer_the_release_lacks_names_the_keys_and_its_layers() -> None:
    with pytest.raises(ConfigError, match=r"saes.layers: layer 4 has no SAE in saes.release 'gemma-scope-2-270m-pt-res'"
                       r" .*the layers it has under this sae_id: \[5, 9, 12, 15\]"):
        pretrained_sae_id(RELEASE, TEMPLATE, 4)
    with pytest.raises(ConfigError, match=r"saes.sae_id 'layer_\{layer\}/width_16k/canonical' .* ids look like"):
        pretrained_sae_id(RELEASE, "layer_{layer}/width_16k/canonical", 5)


def test_an_sae_of_another_width_names_the_key(gemma_scope_2: dict[str, dict[str, torch.Tensor]],
                                               tmp_path: Path) -> None:
    cfg = overlay_source()
    with pytest.raises(ConfigError, match=r"layer 4 \(saes.layers\): the pretrained SAE \(saes.release "
                       r"'gemma-scope-2-270m-pt-res-all' id 'layer_4_width_16k_l0_small'\) has d_in 16, the "
                       r"model's hidden size is 640"):
        provision_sae(4, cfg, base_checkpoint(tmp_path / "base", 640), None, tmp_path / "sae", tmp_path / "r.parquet")
    assert not (tmp_path / "sae").exists()


def test_an_sae_of_another_site_names_the_key(gemma_scope_2: dict[str, dict[str, torch.Tensor]],
                                              tmp_path: Path) -> None:
    cfg = SaeSourceConfig.from_config({"from": "pretrained", "release": "gemma-scope-2-270m-pt-mlp-all",
                                       "sae_id": TEMPLATE})
    with pytest.raises(ConfigError, match=r"layer 4 \(saes.layers\): .* hooks 'blocks.4.hook_mlp_out', not the "
                       r"residual stream after block 4"):
        provision_sae(4, cfg, base_checkpoint(tmp_path / "base", D_IN), None, tmp_path / "sae", tmp_path / "r.parquet")


def test_a_cache_miss_offline_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shape lookup goes through the cache too, so an uncached SAE is a cache miss, not a network error."""
    use_offline_hub(monkeypatch, tmp_path / "empty_hf_home")
    sae_id = pretrained_sae_id(RELEASE_ALL, TEMPLATE, 4)
    with pytest.raises(ModelLoadError, match=r"'layer_4_width_16k_l0_small' is not in the local Hugging Face cache"
                       r" .* HF_HUB_OFFLINE is set"):
        load_pretrained_sae(RELEASE_ALL, sae_id)


def test_the_overlay_validates_and_names_registered_saes_at_the_default_layers() -> None:
    """Merged onto the default as `--configfile` does: valid, the default's layers, and every layer's id in
    sae-lens's registry (nothing is downloaded)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / "gemma_scope_2.yaml").read_text()))
    check_config(config, ROOT / "config" / "schema.yaml")
    saes = config["saes"]
    assert saes["layers"] == default["saes"]["layers"]
    cfg = source_config(saes)
    assert (cfg.source, cfg.train) == ("pretrained", None)
    ids = [pretrained_sae_id(cfg.release, cfg.sae_id, layer) for layer in saes["layers"]]
    assert ids == [f"layer_{layer}_width_16k_l0_small" for layer in saes["layers"]]
