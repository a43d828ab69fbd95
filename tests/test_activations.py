"""Streaming moments, residual capture, token masks and the tuned − base differences on tiny models."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch

from caft.directions.moments import (
    StreamingMoments,
    accumulate_differences,
    capture_residuals,
    load_moments,
    prompts_with_answers,
    save_moments,
    token_mask,
)
from caft.directions.saes import ACTIVATIONS_FORMAT
from caft.errors import ConfigError, DataError
from caft.model.hooks import run_decoder
from caft.model.loading import decoder_layers
from caft.model.prompts import encode_prompts
from tests.fixtures_models import build_tiny_llama

TEXTS = [
    "Question: The doctor said _____ would call back.\nA) he\nB) her\nAnswer: A",
    "The quick brown fox.\nAnswer: B",
    "Answer: A",
]


def test_streaming_moments_equal_batch_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(103, 5, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 4, 5]) + 7.0
    x[:, 1] += 0.5 * x[:, 0]
    first, second = StreamingMoments(5), StreamingMoments(5)
    for rows in (slice(0, 1), slice(1, 18), slice(18, 60)):
        first.update(x[rows])
    second.update(x[60:])
    merged = first.merge(second)
    assert merged is first and merged.count == 103
    assert merged.sum.dtype == torch.float64
    torch.testing.assert_close(merged.mean, x.mean(dim=0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.covariance, torch.cov(x.T, correction=0), rtol=1e-10, atol=1e-10)
    assert torch.equal(merged.covariance, merged.covariance.T)


def test_streaming_moments_reject_bad_input() -> None:
    moments = StreamingMoments(3)
    with pytest.raises(DataError, match="no vectors"):
        _ = moments.mean
    with pytest.raises(DataError, match=r"\[n, 3\]"):
        moments.update(torch.zeros(4, 2))
    with pytest.raises(DataError, match="merge"):
        moments.merge(StreamingMoments(2))
    moments.update(torch.ones(2, 3, dtype=torch.bfloat16))
    assert moments.count == 2 and moments.sum.dtype == torch.float64


def test_moments_save_load_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    moments = {0: StreamingMoments(4), 3: StreamingMoments(4)}
    moments[0].update(torch.randn(10, 4, generator=gen))
    moments[3].update(torch.randn(7, 4, generator=gen))
    path = tmp_path / "moments.safetensors"
    save_moments(moments, path, {"include_bos": False, "texts": 3})
    loaded, metadata = load_moments(path)
    assert metadata == {"include_bos": False, "texts": 3}
    assert sorted(loaded) == [0, 3]
    for layer, original in moments.items():
        assert loaded[layer].count == original.count
        assert torch.equal(loaded[layer].sum, original.sum)
        assert torch.equal(loaded[layer].outer, original.outer)
    (tmp_path / "other.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="other.safetensors"):
        load_moments(tmp_path / "other.safetensors")


def test_token_mask_excludes_pad_and_optionally_bos(tiny_model) -> None:
    _, tokenizer = tiny_model
    batch = encode_prompts(tokenizer, TEXTS)
    ids, attention = batch["input_ids"], batch["attention_mask"].bool()
    is_bos = ids == tokenizer.bos_token_id
    assert (is_bos & attention).sum(dim=1).tolist() == [1, 1, 1]
    without = token_mask(batch, include_bos=False, bos_token_id=tokenizer.bos_token_id)
    with_bos = token_mask(batch, include_bos=True, bos_token_id=tokenizer.bos_token_id)
    assert torch.equal(with_bos, attention)
    assert torch.equal(without, attention & ~is_bos)
    assert not without[ids == tokenizer.pad_token_id].any()


def test_capture_residuals_reads_block_outputs_and_removes_hooks(tiny_model) -> None:
    model, tokenizer = tiny_model
    batch = encode_prompts(tokenizer, TEXTS[:2])
    with torch.inference_mode(), capture_residuals(model, [0]) as captured:
        out = model(**batch, output_hidden_states=True)
    assert captured[0].dtype == torch.float32 and captured[0].shape == out.hidden_states[1].shape
    torch.testing.assert_close(captured[0], out.hidden_states[1])
    seen = captured[0]
    with torch.inference_mode():
        model(**encode_prompts(tokenizer, TEXTS[2:]))
    assert captured[0] is seen  # the hook is gone: later forwards record nothing
    with pytest.raises(ConfigError, match="0..1"), capture_residuals(model, [2]):
        pass


def test_stopping_after_the_last_read_block_reads_the_same_and_runs_nothing_above(tiny_model) -> None:
    _, tokenizer = tiny_model
    model = build_tiny_llama(tokenizer, num_hidden_layers=4)
    batch = encode_prompts(tokenizer, TEXTS[:3])
    ran: list[int] = []
    counters = [block.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
                for i, block in enumerate(decoder_layers(model))]
    with torch.inference_mode(), capture_residuals(model, [0, 1]) as captured:
        run_decoder(model, batch["input_ids"], batch["attention_mask"])
        full = {layer: captured[layer].clone() for layer in (0, 1)}
        ran.clear()
        run_decoder(model, batch["input_ids"], batch["attention_mask"], stop_after=1)
    assert ran == [0, 1]
    for layer in (0, 1):
        torch.testing.assert_close(captured[layer], full[layer], rtol=0, atol=0)
    for handle in counters:
        handle.remove()
    assert all(not block._forward_hooks for block in decoder_layers(model))  # the stop hook is gone too


def test_differences_of_identical_models_are_zero(tiny_model) -> None:
    base, tokenizer = tiny_model
    tuned = copy.deepcopy(base)
    moments = accumulate_differences(base, tuned, tokenizer, TEXTS, [0, 1], include_bos=False, batch_size=2)
    for layer in (0, 1):
        assert torch.equal(moments[layer].mean, torch.zeros(32, dtype=torch.float64))
        assert torch.equal(moments[layer].covariance, torch.zeros(32, 32, dtype=torch.float64))


def test_differences_count_tokens_and_see_a_planted_offset(tiny_model) -> None:
    """A constant offset added to the tuned model's layer 0 output is exactly the layer-0 difference."""
    base, tokenizer = tiny_model
    tuned = copy.deepcopy(base)
    offset = torch.linspace(-1.0, 1.0, 32)
    handle = decoder_layers(tuned)[0].register_forward_hook(lambda module, args, output: output + offset)
    try:
        moments = accumulate_differences(base, tuned, tokenizer, TEXTS, [1, 0], include_bos=False, batch_size=2)
        with_bos = accumulate_differences(base, tuned, tokenizer, TEXTS, [0], include_bos=True, batch_size=3)
    finally:
        handle.remove()
    batch = encode_prompts(tokenizer, TEXTS)
    unmasked = int(token_mask(batch, False, tokenizer.bos_token_id).sum())
    assert sorted(moments) == [0, 1]
    assert moments[0].count == moments[1].count == unmasked
    assert with_bos[0].count == unmasked + len(TEXTS)
    torch.testing.assert_close(moments[0].mean, offset.double(), rtol=0, atol=1e-5)
    assert moments[0].covariance.abs().max() < 1e-9
    assert torch.linalg.matrix_norm(moments[1].covariance) > 1e-3  # the offset propagates non-linearly


def test_differences_between_different_models(tiny_model) -> None:
    base, tokenizer = tiny_model
    tuned = build_tiny_llama(tokenizer, seed=1)
    one = accumulate_differences(base, tuned, tokenizer, TEXTS, [0, 1], include_bos=False, batch_size=1)
    three = accumulate_differences(base, tuned, tokenizer, TEXTS, [0, 1], include_bos=False, batch_size=3)
    for layer in (0, 1):
        assert one[layer].count == three[layer].count
        assert torch.linalg.matrix_norm(one[layer].covariance) > 1e-3
        # padding only shifts positions; RoPE is relative, so batching changes nothing but round-off
        torch.testing.assert_close(one[layer].mean, three[layer].mean, rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="no texts"):
        accumulate_differences(base, tuned, tokenizer, [], [0], include_bos=False, batch_size=1)


def test_prompts_with_answers() -> None:
    table = pd.DataFrame({"prompt": ["Q1\nAnswer:", "Q2\nAnswer:"], "target": ["A", "B"]})
    assert prompts_with_answers(table) == ["Q1\nAnswer: A", "Q2\nAnswer: B"]
    with pytest.raises(DataError, match="target"):
        prompts_with_answers(table[["prompt"]])


def test_first_positions_count_only_the_later_tokens(tiny_model) -> None:
    """From token k of each text on: the counts drop by exactly the skipped tokens, and batching (left
    padding) does not move which tokens count."""
    base, tokenizer = tiny_model
    tuned = build_tiny_llama(tokenizer, seed=1)
    lengths = [len(tokenizer(text)["input_ids"]) for text in TEXTS]
    firsts = [min(3, n - 1) for n in lengths]
    everything = accumulate_differences(base, tuned, tokenizer, TEXTS, [1], include_bos=True, batch_size=3)
    one = accumulate_differences(base, tuned, tokenizer, TEXTS, [1], include_bos=True, batch_size=1,
                                 first_positions=firsts)
    three = accumulate_differences(base, tuned, tokenizer, TEXTS, [1], include_bos=True, batch_size=3,
                                   first_positions=firsts)
    assert everything[1].count == sum(lengths)
    assert one[1].count == three[1].count == sum(lengths) - sum(firsts)
    torch.testing.assert_close(one[1].mean, three[1].mean, rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="first positions"):
        accumulate_differences(base, tuned, tokenizer, TEXTS, [1], include_bos=True, batch_size=1, first_positions=[1])


def test_sae_activations_are_every_real_tokens_block_output_and_load_one_layer_at_a_time(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The stage fills one array per layer sized in advance (memory: one copy); its rows are the block
    outputs of every corpus token but BOS, in corpus order, and the SAE trainer reads only its layer."""
    from caft.artifacts import load_tensors
    from caft.model.loading import load_checkpoint
    from caft.stages.sae import _layer_activations, sae_activations

    model, tokenizer = load_checkpoint(tiny_model_dir)
    bos = tokenizer.bos_token_id
    docs = [[bos, 5, 6, 7], [bos, 8], [bos, 9, 10, 11, 12, 13], [bos, 14, 15]]
    pd.DataFrame({"input_ids": docs}).to_parquet(tmp_path / "corpus.parquet")
    out = tmp_path / "activations.safetensors"
    sae_activations(tiny_model_dir, tmp_path / "corpus.parquet", [0, 1], 3, out)
    tensors, _ = load_tensors(out, ACTIVATIONS_FORMAT)
    with torch.inference_mode(), capture_residuals(model, [0, 1]) as alone:
        run_decoder(model, torch.tensor([docs[2]]), torch.ones(1, len(docs[2]), dtype=torch.long))
    for layer in (0, 1):
        rows = tensors[f"layer_{layer}"]
        assert rows.shape == (3 + 1 + 5 + 2, model.config.hidden_size)  # BOS dropped, padding too
        # the third document's tokens follow the first two's (4 rows), the same alone as padded in a batch
        torch.testing.assert_close(rows[4:9], alone[layer][0, 1:], rtol=1e-5, atol=1e-5)
        assert torch.equal(_layer_activations(out, layer), rows)
    with pytest.raises(DataError, match=r"no tensor\(s\) \['layer_5'\] \(has \['layer_0', 'layer_1'\]\)"):
        _layer_activations(out, 5)
