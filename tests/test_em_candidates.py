"""EM SAE candidates: the answer-likelihood attribution against finite differences, the latent
differences against a by-hand pass, and the union of the three generators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from caft.directions.sae_folders import load_sae_folders
from caft.em.candidates import answer_attribution, latent_differences, union_candidates
from caft.finetune.objectives import encode_table, right_padded
from caft.model.hooks import block_hooks, capture_residuals
from caft.model.loading import ModelSpec, load_model
from tests.test_em_sft import chat_table


def answer_log_likelihood(model: Any, encoded: list, hooks: dict | None = None) -> float:
    """Σ over rows of the log-probability of each row's assistant tokens, one row at a time."""
    total = 0.0
    for ids, labels in encoded:
        input_ids, attention_mask, label_ids = right_padded([(ids, labels)], 0)
        with torch.no_grad(), block_hooks(model, hooks or {}):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[0, :-1].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = label_ids[0, 1:]
        kept = targets != -100
        total += float(logprobs[kept.nonzero().flatten(), targets[kept]].sum())
    return total


def test_attribution_is_the_derivative_of_the_answer_log_likelihood(
    tiny_model: tuple[Any, Any], sae_factory: Callable[..., Path]
) -> None:
    model, tokenizer = tiny_model
    saes = load_sae_folders({0: sae_factory("standard"), 1: sae_factory("standard", seed=1)}, "cpu")
    encoded = encode_table(tokenizer, chat_table(4), 64)
    scores = answer_attribution(model, tokenizer, encoded, saes, batch_size=3)  # a batch of 3 and one of 1
    assert len(scores) == 2 * 64 and scores.attrs["prompts"] == 4
    assert scores.attrs["mean_metric"] == pytest.approx(answer_log_likelihood(model, encoded) / 4, rel=1e-4)
    chosen = scores.loc[scores["effect"].abs().nlargest(3).index]
    for layer, latent, effect in zip(chosen["layer"], chosen["latent"], chosen["effect"], strict=True):
        sae, eps = saes[int(layer)], 1e-2

        def shifted(step: float, sae: Any = sae, latent: int = int(latent)) -> Callable[[torch.Tensor], torch.Tensor]:
            def apply(h: torch.Tensor) -> torch.Tensor:
                z = sae.encode(h)[..., latent : latent + 1]
                keep = torch.ones_like(z)
                keep[:, 0] = 0  # BOS is not scored (each row starts with it)
                return h - step * keep * z * sae.W_dec[latent]
            return apply

        up = answer_log_likelihood(model, encoded, {int(layer): shifted(-eps)})
        down = answer_log_likelihood(model, encoded, {int(layer): shifted(eps)})
        # effect: the first-order drop of m per row if the latent were removed
        assert (up - down) / (2 * eps) / len(encoded) == pytest.approx(effect, rel=0.03, abs=1e-4)


def test_latent_differences_match_a_by_hand_pass(tiny_model_spec: ModelSpec, sae_factory: Callable[..., Path]) -> None:
    base, tokenizer = load_model(tiny_model_spec)
    tuned, _ = load_model(tiny_model_spec)
    with torch.no_grad():
        for param in tuned.model.layers[0].parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    saes = load_sae_folders({1: sae_factory("topk")}, "cpu")
    texts = ["Question: what is two plus two? Answer: four, I think.", "Hi. Hello there, friend."]
    firsts = [9, 3]
    frame = latent_differences(base, tuned, tokenizer, texts, firsts, saes, batch_size=2)

    rows: dict[str, list[torch.Tensor]] = {"base": [], "tuned": []}
    for text, first in zip(texts, firsts, strict=True):
        ids = tokenizer(text, return_tensors="pt").input_ids
        for name, model in (("base", base), ("tuned", tuned)):
            with torch.no_grad(), capture_residuals(model, [1]) as acts:
                model(input_ids=ids)
            rows[name].append(acts[1][0, first:])
    h_base, h_tuned = torch.cat(rows["base"]), torch.cat(rows["tuned"])
    sae = saes[1]
    with torch.no_grad():
        mean_difference = (sae.encode(h_tuned) - sae.encode(h_base)).mean(0)
        difference_encoding = (sae.encode(h_tuned - h_base) - sae.encode(torch.zeros(1, 32))).mean(0)
    np.testing.assert_allclose(frame["mean_difference"], mean_difference.numpy(), atol=1e-5)
    np.testing.assert_allclose(frame["difference_encoding"], difference_encoding.numpy(), atol=1e-5)
    assert frame["difference_encoding"].abs().sum() > 0

    same = latent_differences(base, base, tokenizer, texts, firsts, saes, batch_size=1)
    assert (same["mean_difference"] == 0).all()
    np.testing.assert_allclose(same["difference_encoding"], 0, atol=1e-6)  # the biases' z(0) is taken off


def test_union_takes_each_sources_best_positive_latents_per_layer() -> None:
    attribution = pd.DataFrame({"layer": [0, 0, 0, 1, 1], "latent": [0, 1, 2, 0, 1],
                                "effect": [0.5, 0.9, -1.0, -0.2, -0.1]})
    differences = attribution[["layer", "latent"]].assign(mean_difference=[0.0, 0.1, 0.3, 0.2, -0.5],
                                                          difference_encoding=[0.7, 0.0, 0.0, -1.0, -2.0])
    table = union_candidates(attribution.assign(mean_activation=0.0, firing_rate=0.0), differences, top_per_layer=1)
    by_id = table.set_index(["layer", "latent"])
    assert by_id["sources"].to_dict() == {
        (0, 0): "difference_encoding", (0, 1): "attribution", (0, 2): "mean_difference",
        (1, 0): "mean_difference", (1, 1): "",  # layer 1: no positive attribution or encoding at all
    }
    assert by_id["top"].to_dict() == {key: bool(value) for key, value in by_id["sources"].items()}
    assert list(table.sort_values("rank")["latent"]) == [1, 0, 1, 0, 2]  # by attribution, as the other half
    two = union_candidates(attribution.assign(mean_activation=0.0, firing_rate=0.0), differences, top_per_layer=2)
    assert two.set_index(["layer", "latent"]).loc[(0, 0), "sources"] == "attribution+difference_encoding"
