"""Attribution patching over SAE latents: exactness on a linear model, masking, ranking, validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import PretrainedConfig

from caft.ablation.ablate import LatentAblation
from caft.directions.attribution import attribution_scores, exact_effects, rank_scores, validate_estimates
from caft.errors import ConfigError, DataError
from caft.model.hooks import block_hooks, capture_residuals
from caft.model.loading import ModelSpec, decoder_layers, load_model
from caft.model.prompts import encode_prompts, last_position_logits, letter_token_ids, token_mask

TOY_WIDTH = 16
TOY_LAYERS = 3

PROMPTS = (
    "Question: The doctor said _____ would call back.\nA) he\nB) her\nAnswer:",
    "Question: The nurse told _____ to wait.\nA) him\nB) she\nAnswer:",
    "Answer:",
    "Question: The dogs _____ fast. | I loved this movie.\nA. run, positive\nB. runs, negative\nAnswer:",
    "The quick brown fox jumps over the lazy dog. Answer:",
)
"""Different lengths, so a batch of them carries left padding."""


class ToyBlock(torch.nn.Module):
    """h ↦ h + A h + b + M · (causal mean of the unpadded h): affine in h, so m is affine in every h_L.

    Coordinate 0 is left alone (A, M and b have zero row and column 0): it holds the BOS marker.
    Odd blocks return a tuple, like transformers 4 decoder layers; even ones a tensor, like transformers 5.
    """

    def __init__(self, index: int, generator: torch.Generator) -> None:
        super().__init__()
        self.index = index
        self.local = torch.nn.Linear(TOY_WIDTH, TOY_WIDTH)
        self.mix = torch.nn.Linear(TOY_WIDTH, TOY_WIDTH, bias=False)
        with torch.no_grad():
            for param in (self.local.weight, self.local.bias, self.mix.weight):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.4 / TOY_WIDTH**0.5)
                param[0] = 0
            self.local.weight[:, 0] = 0
            self.mix.weight[:, 0] = 0

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        keep = attention_mask[..., None].to(h.dtype)
        causal_mean = torch.cumsum(h * keep, dim=1) / torch.cumsum(keep, dim=1).clamp(min=1)
        out = h + self.local(h) + self.mix(causal_mean)
        return (out,) if self.index % 2 else out


class ToyLinearLM(torch.nn.Module):
    """Embedding → affine blocks at ``model.layers`` → linear readout: the layout `decoder_layers` expects."""

    def __init__(self, vocab: int, bos_token_id: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.config = PretrainedConfig(hidden_size=TOY_WIDTH)
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(vocab, TOY_WIDTH)
        self.model.layers = torch.nn.ModuleList(ToyBlock(i, generator) for i in range(TOY_LAYERS))
        self.lm_head = torch.nn.Linear(TOY_WIDTH, vocab, bias=False)
        with torch.no_grad():
            self.model.embed_tokens.weight.copy_(torch.randn(vocab, TOY_WIDTH, generator=generator))
            self.model.embed_tokens.weight[:, 0] = 0
            self.model.embed_tokens.weight[bos_token_id, 0] = 1
            self.lm_head.weight.copy_(torch.randn(vocab, TOY_WIDTH, generator=generator))

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0, use_cache: bool = False
    ) -> SimpleNamespace:
        h = self.model.embed_tokens(input_ids)
        for block in self.model.layers:
            out = block(h, attention_mask)
            h = out if isinstance(out, torch.Tensor) else out[0]
        return SimpleNamespace(logits=self.lm_head(h[:, -logits_to_keep:]))


def answers(tokenizer: Any, n: int = len(PROMPTS)) -> tuple[list[int], list[int]]:
    """Alternating correct letters, so m is not the same logit difference for every prompt."""
    ids = letter_token_ids(tokenizer)
    correct = [ids["A"] if i % 2 else ids["B"] for i in range(n)]
    other = [ids["B"] if i % 2 else ids["A"] for i in range(n)]
    return correct, other


def load_sae(folder: Path) -> Any:
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder), device="cpu", dtype="float32")
    sae.requires_grad_(False)
    return sae.eval()


def mean_metric(model: Any, tokenizer: Any, correct: list[int], other: list[int]) -> float:
    """Mean m over PROMPTS in one batch."""
    with torch.inference_mode():
        logits = last_position_logits(model, encode_prompts(tokenizer, PROMPTS)).float()
    rows = torch.arange(len(PROMPTS))
    return float((logits[rows, correct] - logits[rows, other]).mean())


@pytest.fixture
def toy(tiny_tokenizer: Any) -> tuple[ToyLinearLM, Any]:
    return ToyLinearLM(len(tiny_tokenizer), tiny_tokenizer.bos_token_id).eval(), tiny_tokenizer


# --- exactness, masking, dtype on the toy linear model ---------------------------------------------------


@pytest.mark.parametrize("name", ["standard", "topk_rescaled"])
def test_attribution_is_exact_on_a_linear_model(
    name: str, toy: tuple[ToyLinearLM, Any], sae_factory: Callable[..., Path]
) -> None:
    model, tokenizer = toy
    saes = {layer: load_sae(sae_factory(name, d_in=TOY_WIDTH, seed=layer)) for layer in (0, 2)}
    correct, other = answers(tokenizer)
    frame = attribution_scores(model, tokenizer, PROMPTS, correct, other, saes, batch_size=2)

    assert list(frame.columns) == ["layer", "latent", "effect", "mean_activation", "firing_rate"]
    assert len(frame) == 2 * 64 and frame["effect"].dtype == np.float32
    assert frame.attrs["mean_metric"] == pytest.approx(mean_metric(model, tokenizer, correct, other), rel=1e-5)
    strongest = frame.loc[frame["effect"].abs().groupby(frame["layer"]).nlargest(4).index.get_level_values(1)]
    latents = list(zip(strongest["layer"], strongest["latent"], strict=True))
    as_arrays = np.array(correct), torch.tensor(other)
    exact = exact_effects(model, tokenizer, PROMPTS, *as_arrays, saes, latents, batch_size=3)
    scale = np.abs(exact).max()
    assert scale > 1e-2
    np.testing.assert_allclose(strongest["effect"].to_numpy(), exact, rtol=1e-4, atol=1e-4 * scale)


def test_bos_and_padding_contribute_nothing(
    toy: tuple[ToyLinearLM, Any], sae_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer = toy
    sae = load_sae(sae_factory("standard", d_in=TOY_WIDTH))
    with torch.no_grad():  # latent 0 reads the BOS marker: z_0 = relu(h_0 − 0.5) is 0.5 on BOS, 0 elsewhere
        sae.b_dec[0] = 0
        sae.W_enc[:, 0] = 0
        sae.W_enc[0, 0] = 1
        sae.b_enc[0] = -0.5
    correct, other = answers(tokenizer)
    batched = attribution_scores(model, tokenizer, PROMPTS, correct, other, {1: sae}, batch_size=5, progress=True)
    assert "attribution" in capsys.readouterr().err
    one_by_one = attribution_scores(model, tokenizer, PROMPTS, correct, other, {1: sae}, batch_size=1)
    for column in ("effect", "mean_activation", "firing_rate"):
        np.testing.assert_allclose(batched[column], one_by_one[column], rtol=1e-5, atol=1e-6)
    assert batched.attrs["tokens"] == one_by_one.attrs["tokens"]

    batch = encode_prompts(tokenizer, PROMPTS)
    mask = token_mask(batch, include_bos=False, bos_token_id=tokenizer.bos_token_id)
    assert (~batch["attention_mask"].bool()).any(), "the batch must carry padding"
    with torch.no_grad(), capture_residuals(model, [1]) as captured:
        model(**batch)
        z = sae.encode(captured[1])
    bos = batch["input_ids"] == tokenizer.bos_token_id
    assert (z[..., 0][bos] == 0.5).all() and (z[..., 0][~bos] == 0).all()
    assert batched.attrs["tokens"] == int(mask.sum())
    np.testing.assert_allclose(batched["firing_rate"], (z[mask] > 0).float().mean(0), atol=1e-6)
    np.testing.assert_allclose(batched["mean_activation"], z[mask].mean(0), rtol=1e-5, atol=1e-6)
    with_padding = (z[~bos] > 0).float().mean(0)
    assert not np.allclose(batched["firing_rate"], with_padding, atol=1e-3), "counting padding must show"

    bos_row = batched.iloc[0]
    assert bos_row["effect"] == 0 and bos_row["firing_rate"] == 0 and bos_row["mean_activation"] == 0
    with block_hooks(model, {1: LatentAblation(sae, [0], "layer 1")}):
        moved = mean_metric(model, tokenizer, correct, other)
    assert abs(moved - mean_metric(model, tokenizer, correct, other)) > 1e-3, "BOS ablation must matter unmasked"


# --- the real tiny Llama ---------------------------------------------------------------------------------


def test_estimates_track_exact_effects_on_tiny_llama(
    tiny_model: tuple[Any, Any], sae_factory: Callable[..., Path]
) -> None:
    model, tokenizer = tiny_model
    saes = {0: load_sae(sae_factory("jumprelu")), 1: load_sae(sae_factory("standard", seed=1))}
    correct, other = answers(tokenizer)
    frame = rank_scores(attribution_scores(model, tokenizer, PROMPTS, correct, other, saes, batch_size=2), top_n=10)
    chosen = frame.loc[frame["effect"].abs().nlargest(8).index]
    latents = list(zip(chosen["layer"], chosen["latent"], strict=True))
    assert set(chosen["layer"]) == {0, 1}
    exact = exact_effects(model, tokenizer, PROMPTS, correct, other, saes, latents, batch_size=5)

    validated, summary = validate_estimates(frame, exact, latents)
    assert summary["validated"] == 8
    assert summary["pearson"] > 0.5 and summary["spearman"] > 0
    np.testing.assert_allclose(validated.loc[chosen.index, "exact_effect"], exact)
    assert validated["exact_effect"].notna().sum() == 8
    assert summary["max_abs_error"] == pytest.approx(np.abs(chosen["effect"].to_numpy() - exact).max())
    assert list(validated.columns[:-1]) == list(frame.columns)


def test_model_is_left_unchanged(tiny_model: tuple[Any, Any], sae_factory: Callable[..., Path]) -> None:
    model, tokenizer = tiny_model
    frozen = model.model.embed_tokens.weight
    frozen.requires_grad_(False)
    model.model.layers[1].train()
    batch = encode_prompts(tokenizer, PROMPTS)
    with torch.no_grad():
        before = last_position_logits(model, batch)
    correct, other = answers(tokenizer)
    saes = {1: load_sae(sae_factory("topk"))}
    attribution_scores(model, tokenizer, PROMPTS, correct, other, saes, batch_size=2)
    exact_effects(model, tokenizer, PROMPTS, correct, other, saes, [(1, 0)], batch_size=2)

    assert all(param.grad is None for param in model.parameters())
    assert not frozen.requires_grad
    assert all(param.requires_grad for name, param in model.named_parameters() if name != "model.embed_tokens.weight")
    assert model.model.layers[1].training and not model.training and not model.model.layers[0].training
    model.model.layers[1].eval()
    with torch.no_grad():
        assert torch.equal(last_position_logits(model, batch), before)
    assert all(not block._forward_hooks for block in decoder_layers(model))


def test_bf16_model_gives_float32_scores_close_to_float32(
    tiny_model: tuple[Any, Any], tiny_model_spec: ModelSpec, sae_factory: Callable[..., Path]
) -> None:
    model, tokenizer = tiny_model
    bf16, _ = load_model(ModelSpec(name=tiny_model_spec.name, dtype="bfloat16"))
    saes = {0: load_sae(sae_factory("standard")), 1: load_sae(sae_factory("jumprelu", seed=1))}
    correct, other = answers(tokenizer)
    full = attribution_scores(model, tokenizer, PROMPTS, correct, other, saes, batch_size=5)
    half = attribution_scores(bf16, tokenizer, PROMPTS, correct, other, saes, batch_size=5)
    assert half["effect"].dtype == np.float32 and half["mean_activation"].dtype == np.float32
    scale = full["effect"].abs().max()
    assert scale > 0
    np.testing.assert_allclose(half["effect"], full["effect"], atol=0.1 * scale)
    assert np.corrcoef(half["effect"], full["effect"])[0, 1] > 0.95
    assert half.attrs["mean_metric"] == pytest.approx(full.attrs["mean_metric"], abs=0.1)


# --- ranking and validation ------------------------------------------------------------------------------


def test_rank_scores_signed_with_ties() -> None:
    frame = pd.DataFrame(
        {
            "layer": [0, 0, 0, 1, 1, 1],
            "latent": [0, 1, 2, 0, 1, 2],
            "effect": [2.0, -5.0, 1.0, 2.0, 0.5, -0.1],
        }
    )
    frame.attrs["mean_metric"] = 1.5
    ranked = rank_scores(frame, top_n=4)
    assert ranked["rank"].tolist() == [0, 5, 2, 1, 3, 4]
    assert ranked["layer_rank"].tolist() == [0, 2, 1, 0, 1, 2]
    assert ranked["top"].tolist() == [True, False, True, True, True, False]
    assert ranked.attrs["mean_metric"] == 1.5 and "rank" not in frame
    five = rank_scores(frame, top_n=5)
    assert five.loc[five["top"], "effect"].min() == -0.1, "the largest negative enters before -5"
    with pytest.raises(ConfigError, match="top_n"):
        rank_scores(frame, top_n=-1)
    with pytest.raises(DataError, match="effect"):
        rank_scores(frame.drop(columns="effect"))


def test_validate_estimates_summary_and_errors() -> None:
    frame = pd.DataFrame({"layer": [0, 0, 1], "latent": [0, 1, 0], "effect": [1.0, 2.0, 4.0]})
    validated, summary = validate_estimates(frame, np.array([3.0, 1.5, 1.0]), [(1, 0), (0, 0), (0, 1)])
    np.testing.assert_array_equal(validated["exact_effect"], [1.5, 1.0, 3.0])
    assert summary["validated"] == 3 and summary["pearson"] == pytest.approx(np.corrcoef([4, 1, 2], [3, 1.5, 1])[0, 1])
    assert summary["spearman"] == pytest.approx(0.5) and summary["max_abs_error"] == pytest.approx(1.0)
    partial, _ = validate_estimates(frame, np.array([2.0]), [(0, 1)])
    np.testing.assert_array_equal(partial["exact_effect"], [np.nan, 2.0, np.nan])
    _, single = validate_estimates(frame, np.array([1.0]), [(0, 1)])
    assert single["validated"] == 1 and np.isnan(single["pearson"]) and single["max_abs_error"] == 1.0
    untouched, nothing = validate_estimates(frame, np.zeros(0), [])
    assert nothing["validated"] == 0 and np.isnan(nothing["max_abs_error"]) and untouched["exact_effect"].isna().all()
    with pytest.raises(DataError, match=r"\(2, 0\)"):
        validate_estimates(frame, np.array([1.0]), [(2, 0)])
    with pytest.raises(DataError, match="2 exact effects for 1 latents"):
        validate_estimates(frame, np.array([1.0, 2.0]), [(0, 0)])


def test_input_errors(toy: tuple[ToyLinearLM, Any], sae_factory: Callable[..., Path]) -> None:
    model, tokenizer = toy
    saes = {0: load_sae(sae_factory("standard", d_in=TOY_WIDTH))}
    correct, other = answers(tokenizer)
    with pytest.raises(DataError, match="5 prompts but 4 correct"):
        attribution_scores(model, tokenizer, PROMPTS, correct[:4], other, saes, batch_size=2)
    with pytest.raises(DataError, match="no prompts"):
        attribution_scores(model, tokenizer, [], [], [], saes, batch_size=2)
    with pytest.raises(DataError, match="same token"):
        attribution_scores(model, tokenizer, PROMPTS, correct, correct, saes, batch_size=2)
    with pytest.raises(DataError, match="vocabulary size"):
        attribution_scores(model, tokenizer, PROMPTS, [10**6] * 5, other, saes, batch_size=2)
    with pytest.raises(ConfigError, match="batch_size"):
        attribution_scores(model, tokenizer, PROMPTS, correct, other, saes, batch_size=0)
    with pytest.raises(ConfigError, match="layers must be"):
        attribution_scores(model, tokenizer, PROMPTS, correct, other, {TOY_LAYERS: saes[0]}, batch_size=2)
    wide = load_sae(sae_factory("standard", d_in=32))
    with pytest.raises(ConfigError, match="layer 2: the SAE has d_in 32, but the model's hidden size is 16"):
        attribution_scores(model, tokenizer, PROMPTS, correct, other, {0: saes[0], 2: wide}, batch_size=2)
    with pytest.raises(ConfigError, match=r"latent \(1, 0\): no SAE for layer 1"):
        exact_effects(model, tokenizer, PROMPTS, correct, other, saes, [(1, 0)], batch_size=2)
    with pytest.raises(ConfigError, match="out of range"):
        exact_effects(model, tokenizer, PROMPTS, correct, other, saes, [(0, 64)], batch_size=2)
