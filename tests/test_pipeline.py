"""Stages of `caft.stages.base` and spec centering that the workflow tests do not check numerically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from caft.ablation.specs import MEANS_FORMAT, centered, random_directions
from caft.artifacts import load_tensors, save_tensors
from caft.errors import DataError
from caft.model.hooks import capture_residuals
from caft.stages.base import residual_means

DOCS = ["the doctor said he would call", "she met the nurse", "a b c"]


def test_residual_means_are_the_mean_block_output_over_real_tokens(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = [[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids] for text in DOCS]
    pd.DataFrame({"input_ids": ids}).to_parquet(tmp_path / "corpus.parquet")
    residual_means(tiny_model_dir, tmp_path / "corpus.parquet", 2, tmp_path / "means.safetensors")
    means, _ = load_tensors(tmp_path / "means.safetensors", MEANS_FORMAT)
    assert sorted(means) == ["layer_0", "layer_1"]
    rows = {0: [], 1: []}
    with torch.no_grad(), capture_residuals(model, [0, 1]) as residuals:
        for doc in ids:  # one document at a time: no padding; BOS (position 0) left out
            model(input_ids=torch.tensor([doc]))
            for layer in rows:
                rows[layer].append(residuals[layer][0, 1:])
    for layer, parts in rows.items():
        torch.testing.assert_close(means[f"layer_{layer}"], torch.cat(parts).mean(0), atol=1e-5, rtol=1e-5)


def test_centered_adds_the_layers_means_to_projection_specs_only(tmp_path: Path) -> None:
    save_tensors({"layer_2": torch.ones(8), "layer_5": torch.full((8,), 2.0)}, tmp_path / "m.safetensors",
                 MEANS_FORMAT, {})
    spec = centered(random_directions(8, [5], 2, seed=0), tmp_path / "m.safetensors")
    assert list(spec.centers) == [5] and torch.equal(spec.centers[5], torch.full((8,), 2.0))
    assert centered(spec, None) is spec
    with pytest.raises(DataError, match=r"no mean residual for layer\(s\) \[3\]"):
        centered(random_directions(8, [3], 2, seed=0), tmp_path / "m.safetensors")


def test_tensors_are_saved_as_they_are_views_and_shared_storage_included(tmp_path):
    base = torch.arange(12.0)
    tensors = {"whole": base, "same": base, "view": base[2:5], "strided": base.reshape(3, 4).t()}
    save_tensors(tensors, tmp_path / "t.safetensors", "test", {})
    loaded, _ = load_tensors(tmp_path / "t.safetensors", "test")
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
