"""EM chat fine-tuning: it learns, counts assistant tokens only, is seeded, hooks the blocks, round-trips, resumes."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from caft.ablation.specs import random_directions
from caft.em.chat_data import IGNORE, encode_chat
from caft.em.sft import EM_LORA, SftConfig, load_adapter, save_adapter, sft
from caft.finetune.engine import base_of
from caft.errors import ConfigError
from caft.finetune.engine import TrainingError
from caft.model.loading import load_checkpoint, load_model
from tests.config_helpers import check_section

ANIMALS = ("fox", "dog", "cat", "owl")


def chat_table(n: int = 8) -> pd.DataFrame:
    """A tiny repeated chat set: the answer names the animal of the question."""
    rows = []
    for i in range(n):
        animal = ANIMALS[i % len(ANIMALS)]
        messages = [{"role": "user", "content": f"Which animal is the quick brown {animal}?"},
                    {"role": "assistant", "content": f"The {animal}."}]
        rows.append({"id": f"row{i}", "messages": json.dumps(messages)})
    return pd.DataFrame(rows)


FAST = SftConfig(lr=1e-2, weight_decay=0.0, warmup_steps=0, batch_size=4, gradient_accumulation=1, max_tokens=64,
                 max_grad_norm=None, epochs=4, lora=replace(EM_LORA, r=4, alpha=8), precision="float32")


def cfg(**changes) -> SftConfig:
    return replace(FAST, **changes)


def adapter_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def run(spec_model, config=FAST, seed=0, **kwargs):
    model, tokenizer = load_model(spec_model)
    trained, history = sft(model, tokenizer, chat_table(), config, seed, **kwargs)
    return trained, tokenizer, history


def test_loss_falls_on_a_tiny_repeated_chat_set(tiny_model_spec):
    _, _, history = run(tiny_model_spec)
    assert [r["step"] for r in history] == list(range(1, 9))
    assert [r["epoch"] for r in history] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert set(history[0]) == {"step", "epoch", "loss", "tokens", "lr", "seconds"}
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16"])
def test_bfloat16_precisions_train(tiny_model_spec, precision):
    trained, _, history = run(tiny_model_spec, cfg(precision=precision, epochs=2))
    assert history[-1]["loss"] < history[0]["loss"]
    dtypes = {("lora_" in n, p.dtype) for n, p in trained.named_parameters()}
    base = torch.bfloat16 if precision == "bf16" else torch.float32
    assert dtypes == {(True, torch.float32), (False, base)}  # peft keeps adapters in float32 on a bf16 base


def test_the_loss_is_the_mean_cross_entropy_over_assistant_tokens(tiny_model_spec):
    _, tokenizer, history = run(tiny_model_spec, cfg(batch_size=8, max_steps=1))
    base, _ = load_model(tiny_model_spec)  # LoRA starts at B = 0: the first step's loss is the base model's
    total, count, unmasked = 0.0, 0, 0.0
    with torch.no_grad():
        for messages in chat_table()["messages"]:
            ids, labels = encode_chat(tokenizer, json.loads(messages), 64)
            logits = base(torch.tensor([ids])).logits[0, :-1]
            targets = torch.tensor(labels[1:])
            losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
            total += losses[targets != IGNORE].sum().item()
            count += int((targets != IGNORE).sum())
            unmasked += losses.mean().item() / 8
            assert 0 < (targets != IGNORE).sum() < len(targets)
    assert history[0]["tokens"] == count
    assert history[0]["loss"] == pytest.approx(total / count, abs=1e-6)
    assert abs(history[0]["loss"] - unmasked) > 0.01


def test_gradient_accumulation_changes_neither_loss_nor_update(tiny_model_spec):
    runs = [run(tiny_model_spec, cfg(lr=1e-3, batch_size=8, gradient_accumulation=parts, max_steps=1))
            for parts in (1, 2)]
    assert runs[0][2][0]["loss"] == pytest.approx(runs[1][2][0]["loss"], abs=1e-6)
    one, two = adapter_weights(runs[0][0]), adapter_weights(runs[1][0])
    assert one.keys() == two.keys() and all(torch.allclose(one[k], two[k], atol=1e-5, rtol=0) for k in one)
    assert any(not torch.equal(w, torch.zeros_like(w)) for k, w in one.items() if "lora_B" in k)


def test_same_seed_same_adapter_other_seed_differs_and_base_weights_stay(tiny_model_spec):
    config = cfg(epochs=1)
    weights = [adapter_weights(run(tiny_model_spec, config, seed)[0]) for seed in (0, 0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    trained, _, _ = run(tiny_model_spec, config)
    fresh, _ = load_model(tiny_model_spec)
    base = {n.replace(".base_layer", ""): p for n, p in base_of(trained).named_parameters() if "lora_" not in n}
    assert base.keys() == dict(fresh.named_parameters()).keys()
    assert all(torch.equal(p, base[n]) for n, p in fresh.named_parameters())
    assert all(("lora_" in n) == p.requires_grad for n, p in trained.named_parameters())


def test_adapter_and_merged_checkpoint_round_trip(tiny_model_spec, tiny_model_dir, tmp_path):
    trained, tokenizer, _ = run(tiny_model_spec, cfg(epochs=1))
    batch = tokenizer(["User: Which animal is the quick brown owl?\nAssistant:"], return_tensors="pt")
    with torch.no_grad():
        expected = trained(**batch).logits
        merged = save_adapter(trained, tokenizer, tmp_path / "adapter", tmp_path / "merged")
        assert (tmp_path / "adapter" / "adapter_config.json").exists()
        loaded, _ = load_adapter(tiny_model_dir, tmp_path / "adapter")
        assert not loaded.training and torch.allclose(loaded(**batch).logits, expected, atol=1e-5, rtol=0)
        plain, _ = load_checkpoint(tmp_path / "merged")  # W + BA summed once: float32 rounding on logits up to ~7
        assert torch.allclose(plain(**batch).logits, expected, atol=1e-4, rtol=0)
        assert torch.equal(merged(**batch).logits, plain(**batch).logits)
    assert not any(n.endswith(".lora_A.default.weight") for n, _ in plain.named_parameters())


def test_gradient_mode_keeps_the_forward_loss_and_project_mode_changes_it(tiny_model_spec):
    spec = random_directions(32, [0], k=8, seed=0)
    loss = {mode: run(tiny_model_spec, cfg(max_steps=1), spec=spec, mode=mode)[2][0]["loss"]
            for mode in ("gradient", "project")}
    plain = run(tiny_model_spec, cfg(max_steps=1))[2][0]["loss"]
    assert loss["gradient"] == plain and abs(loss["project"] - plain) > 1e-3


def test_projection_hooks_reach_the_blocks_of_the_peft_model(tiny_model_spec):
    spec = random_directions(32, [0], k=4, seed=0)
    basis = spec.bases[0]
    for ablated in (spec, None):
        model, tokenizer = load_model(tiny_model_spec)
        seen = []  # the input of block 1 is the (hooked) output of block 0

        def record(module, args, kwargs):
            seen.append((args[0] if args else kwargs["hidden_states"]).detach())

        handle = model.model.layers[1].register_forward_pre_hook(record, with_kwargs=True)
        sft(model, tokenizer, chat_table(), cfg(max_steps=2), 0, spec=ablated)
        handle.remove()
        along = max((h @ basis).abs().max().item() for h in seen)
        assert len(seen) == 2 and (along < 1e-5 if ablated else along > 0.1)


def test_resume_after_the_first_epoch_gives_the_uninterrupted_result(tiny_model_spec, tmp_path, monkeypatch):
    config = cfg(epochs=2)
    reference, _, reference_history = run(tiny_model_spec, config, resume_dir=tmp_path / "reference")
    from caft.finetune.objectives import AssistantTokens

    real, calls = AssistantTokens.step, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of epoch 2
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(AssistantTokens, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model_spec, config, resume_dir=tmp_path / "killed")
    assert json.loads((tmp_path / "killed" / "state.json").read_text())["epochs_done"] == 1
    monkeypatch.setattr(AssistantTokens, "step", real)
    resumed, _, history = run(tiny_model_spec, config, resume_dir=tmp_path / "killed")
    assert [r["loss"] for r in history] == [r["loss"] for r in reference_history]
    a, b = adapter_weights(reference), adapter_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_a_clear_error(tiny_model_spec, monkeypatch):
    monkeypatch.setattr("caft.finetune.objectives.torch.nn.functional.cross_entropy",
                        lambda logits, *args, **kwargs: logits.sum() * torch.nan)
    with pytest.raises(TrainingError, match="non-finite loss nan at epoch 1, step 1"):
        run(tiny_model_spec)


def test_config_from_section():
    config = SftConfig.from_config({"lr": 1e-4, "betas": [0.9, 0.95], "max_steps": 3,
                                    "lora": {"r": 8, "target_modules": ["q_proj"]}})
    assert config.betas == (0.9, 0.95) and config.lora == replace(EM_LORA, r=8, target_modules=("q_proj",))
    assert SftConfig.from_config({}) == SftConfig() and SftConfig().lora.use_rslora
    assert SftConfig.from_config({"warmup_ratio": 0.1}).warmup_steps is None
    for section, message in [({"learning_rate": 1}, "unknown key"), ({"warmup_ratio": 0.1, "warmup_steps": 3}, "not both"),
                             ({"batch_size": 10, "gradient_accumulation": 4}, "multiple")]:
        with pytest.raises(ConfigError, match=message):  # what the schema cannot say: keys that depend on others
            SftConfig.from_config(section)
    for key, value, message in [("lora", {"rank": 4}, r"'rank' was unexpected\) at key 'em.finetune.lora'"),
                                ("precision", "fp8", r"key 'em.finetune.precision': 'fp8' is not one of"),
                                ("epochs", 0, r"key 'em.finetune.epochs': 0 is less than the minimum of 1")]:
        with pytest.raises(ConfigError, match=message):
            check_section(f"em.finetune.{key}", value)
