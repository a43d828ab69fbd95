"""Fine-tuning: it learns, it is deterministic, it resumes, it fails cleanly, it writes real checkpoints."""

import json
import math

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from caft.ablation.specs import random_directions, save_spec
from caft.finetune.evaluation import EvaluationConfig, predict, summarize
from caft.finetune.engine import LoraSettings, Recipe, TrainingError, adamw, linear_schedule, training_subset
from caft.finetune.training import TrainConfig, train
from caft.model.loading import ModelSpec, load_model
from caft.stages.finetune import evaluate, finetune

WORDS = ("doctor", "nurse", "model", "option", "question", "pronoun", "correct", "lazy", "quick", "brown")


def letter_task(n: int = 48) -> pd.DataFrame:
    """A trivially learnable task: the answer is A when the question says 'fox', B when it says 'dog'."""
    rows = []
    for i in range(n):
        animal = ("fox", "dog")[i % 2]
        rows.append((f"Question: The {WORDS[i % len(WORDS)]} {animal} {WORDS[(i // 2) % len(WORDS)]}\nAnswer:",
                     "A" if animal == "fox" else "B"))
    table = pd.DataFrame(rows, columns=["prompt", "target"])
    table["other"] = table["target"].map({"A": "B", "B": "A"})
    return table


PLAIN = {"precision": "float32", "train_fraction": 1.0, "freeze_embeddings": False}
"""The recipe keys these tests were written with (the schema's defaults before config/config.yaml's
recommended ones became the defaults): the whole training split, float32, the embedding trained."""


def plain(**values) -> TrainConfig:
    return TrainConfig(**(PLAIN | values))


FAST = plain(lr=3e-3, warmup_ratio=0.1, epochs=6, batch_size=8, weight_decay=0.0)


def fresh(spec: ModelSpec):
    return load_model(spec)


def test_tiny_model_learns_a_trivial_letter_task(tiny_model_spec):
    model, tokenizer = fresh(tiny_model_spec)
    table = letter_task()
    before = summarize(predict(model, tokenizer, table, "target"))["acc_2way"]
    model, history = train(model, tokenizer, table, FAST, seed=0)
    after = summarize(predict(model, tokenizer, letter_task(20).iloc[::-1], "target"))["acc_2way"]
    assert before <= 0.7 and after == 1.0
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    assert [r["step"] for r in history] == list(range(1, 6 * 6 + 1))


def test_same_seed_same_run_and_other_seed_differs(tiny_model_spec):
    cfg = plain(lr=1e-3, epochs=2, batch_size=8)
    runs = []
    for seed in (0, 0, 1):
        model, tokenizer = fresh(tiny_model_spec)
        model, history = train(model, tokenizer, letter_task(), cfg, seed=seed)
        runs.append(([r["loss"] for r in history], [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0] != runs[2][0]


def test_schedule_warms_up_linearly_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = linear_schedule(optimizer, warmup=4, total=10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_fused_adamw_makes_the_default_adamw_update():
    """The engine's fused optimizer is a speed-up only: its steps match PyTorch's default (foreach) AdamW."""
    recipe = Recipe(lr=1e-2, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(64, 32, generator=generator)
    grads = [torch.randn(64, 32, generator=generator) for _ in range(5)]
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    fused = adamw([params[0]], recipe)
    plain_adamw = torch.optim.AdamW([params[1]], lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    assert fused.defaults["fused"] and not plain_adamw.defaults["fused"]
    for grad in grads:
        for param, optimizer in zip(params, (fused, plain_adamw)):
            param.grad = grad.clone()
            optimizer.step()
    assert not torch.equal(params[0], start)
    torch.testing.assert_close(params[0], params[1], rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_matches_one_big_batch(tiny_model_spec):
    results = []
    for accumulation in (1, 4):
        model, tokenizer = fresh(tiny_model_spec)
        cfg = plain(lr=1e-3, epochs=1, batch_size=8, gradient_accumulation=accumulation)
        model, history = train(model, tokenizer, letter_task(16), cfg, seed=0)
        results.append(([r["loss"] for r in history], next(model.parameters()).detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_training_subset_is_seeded_and_keeps_source_order():
    table = letter_task(40).assign(position=range(40))
    half = training_subset(table, 0.5, seed=3)
    assert len(half) == 20 and half.equals(training_subset(table, 0.5, seed=3))
    assert not half.equals(training_subset(table, 0.5, seed=4))
    assert half["position"].is_monotonic_increasing and training_subset(table, 1.0, seed=3).equals(table)


def test_frozen_embeddings_do_not_move(tiny_model_spec):
    model, tokenizer = fresh(tiny_model_spec)
    before = model.get_input_embeddings().weight.detach().clone()
    cfg = plain(lr=1e-3, epochs=1, batch_size=8, freeze_embeddings=True)
    model, _ = train(model, tokenizer, letter_task(16), cfg, seed=0)
    assert torch.equal(model.get_input_embeddings().weight, before)


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16"])
def test_bfloat16_precisions_train(tiny_model_spec, precision):
    model, tokenizer = fresh(tiny_model_spec)
    cfg = plain(lr=3e-3, epochs=3, batch_size=8, warmup_ratio=0.1, precision=precision)
    model, history = train(model, tokenizer, letter_task(), cfg, seed=0)
    assert all(math.isfinite(r["loss"]) for r in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert next(model.parameters()).dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)


def test_lora_is_merged_into_a_plain_checkpoint(tiny_model_spec, tiny_model_dir, tmp_path):
    model, tokenizer = fresh(tiny_model_spec)
    cfg = TrainConfig.from_config(
        PLAIN | {"lr": 3e-3, "batch_size": 8, "epochs": {"frames": 2},
         "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}, "frames")
    model, _ = train(model, tokenizer, letter_task(), cfg, seed=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(dict(model.named_parameters())) == set(dict(base.named_parameters()))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


def test_lora_trains_with_an_ablation_spec_through_the_peft_wrapper(tiny_model_spec):
    """LoRA and a CAFT spec together: the engine hooks the peft model's base blocks (before the one engine the
    spurious half hooked the wrapper itself and stopped with 'unsupported architecture PeftModel')."""
    cfg = plain(lr=3e-3, epochs=1, batch_size=8, lora=LoraSettings(r=4, alpha=8))
    losses = []
    for spec in (None, "ablate"):
        model, tokenizer = fresh(tiny_model_spec)
        if spec:
            spec = random_directions(model.config.hidden_size, [0, 1], 4, 0)
        trained, history = train(model, tokenizer, letter_task(), cfg, seed=0, spec=spec)
        assert not any("lora_" in name for name, _ in trained.named_parameters())  # merged into a plain model
        losses.append([r["loss"] for r in history])
    assert len(losses[1]) == 6 and all(math.isfinite(x) for x in losses[1])
    assert losses[0][0] != losses[1][0]  # the hooks changed the forward


def test_non_finite_loss_stops_with_a_clear_error_and_no_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    train_split = tmp_path / "train.parquet"
    letter_task().to_parquet(train_split)
    monkeypatch.setattr("caft.finetune.objectives.torch.nn.functional.cross_entropy", lambda logits, targets: logits.sum() * math.nan)
    with pytest.raises(TrainingError, match="non-finite loss nan at epoch 1, step 1"):
        finetune(TrainConfig.from_config(PLAIN | {"lr": 1e-3, "batch_size": 8}, "frames"), ModelSpec(str(tiny_model_dir)),
                 tiny_model_dir, train_split, None, 0, {}, tmp_path / "run" / "model", tmp_path / "run" / "log.jsonl",
                 tmp_path / "run" / "run.json")
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "run.json").exists()


def run_finetune(base_dir, tmp_path, name, section, spec=None):
    train_split = tmp_path / "train.parquet"
    letter_task().to_parquet(train_split)
    out = tmp_path / name
    finetune(TrainConfig.from_config(PLAIN | section, "frames"), ModelSpec(str(base_dir)), base_dir, train_split, spec, 0,
             {"task": "letters", "method": "none", "selector": "none"},
             out / "model", out / "train_log.jsonl", out / "run.json")
    return out


def test_finetune_writes_checkpoint_log_and_metadata_from_fresh_weights(tiny_model_dir, tmp_path):
    section = {"lr": 3e-3, "batch_size": 8, "epochs": {"frames": 2}, "warmup_ratio": 0.1}
    first = run_finetune(tiny_model_dir, tmp_path, "first", section)
    second = run_finetune(tiny_model_dir, tmp_path, "second", section)
    logs = [[json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()] for run in (first, second)]
    assert len(logs[0]) == 12 and set(logs[0][0]) == {"step", "epoch", "loss", "accuracy", "lr", "seconds"}
    # the second run starts from the base weights, not from the first run's
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    meta = json.loads((first / "run.json").read_text())
    assert meta["seed"] == 0 and meta["steps"] == 12 and meta["finetune"]["lr"] == 3e-3 and meta["finetune"]["epochs"] == 2 and "torch" in meta["versions"]
    loaded = AutoModelForCausalLM.from_pretrained(first / "model", use_safetensors=True)
    assert (first / "model" / "model.safetensors").exists()
    trained, tokenizer = load_model(ModelSpec(name=str(first / "model")))
    batch = tokenizer(["Question: The lazy fox quick\nAnswer:"], return_tensors="pt")
    assert torch.equal(loaded(**batch).logits, trained(**batch).logits)
    assert not (first / "model.resume").exists() and not list(first.glob("*.partial"))


def test_killed_run_resumes_to_the_same_result(tiny_model_dir, tmp_path, monkeypatch):
    section = {"lr": 3e-3, "batch_size": 8, "epochs": {"frames": 3}, "warmup_ratio": 0.1}
    reference = run_finetune(tiny_model_dir, tmp_path, "reference", section)

    from caft.finetune.objectives import LastPositionAnswer

    real_loss, calls = LastPositionAnswer.loss, {"n": 0}

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 15:  # in the third epoch (6 steps per epoch)
            raise KeyboardInterrupt("killed")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(LastPositionAnswer, "loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(tiny_model_dir, tmp_path, "killed", section)
    killed = tmp_path / "killed"
    assert (killed / "model.resume" / "state.json").exists() and not (killed / "model").exists()
    monkeypatch.setattr(LastPositionAnswer, "loss", real_loss)
    run_finetune(tiny_model_dir, tmp_path, "killed", section)
    losses = [[json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
              for run in (reference, killed)]
    assert losses[0] == losses[1]
    a = AutoModelForCausalLM.from_pretrained(reference / "model")
    b = AutoModelForCausalLM.from_pretrained(killed / "model")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_stale_resume_state_from_another_config_is_ignored(tiny_model_dir, tmp_path, monkeypatch):
    section = {"lr": 3e-3, "batch_size": 8, "epochs": {"frames": 2}, "warmup_ratio": 0.1}
    reference = run_finetune(tiny_model_dir, tmp_path, "reference", section)
    stale = tmp_path / "other" / "model.resume"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text(json.dumps({"fingerprint": "another run", "epochs_done": 1, "history": []}))
    other = run_finetune(tiny_model_dir, tmp_path, "other", section)
    assert (reference / "train_log.jsonl").read_text().count("\n") == (other / "train_log.jsonl").read_text().count("\n")


def test_evaluate_modes_and_spec_checks(tiny_model_dir, tmp_path):
    table = letter_task(12)
    for split in ("val", "ood"):
        table.to_parquet(tmp_path / f"{split}.parquet")
    spec_path = tmp_path / "spec.safetensors"
    save_spec(random_directions(32, [0, 1], 4, seed=0), spec_path)
    key = {"task": "letters", "method": "random", "selector": "random", "seed": 0}
    evaluate(EvaluationConfig(batch_size=5, precision="float32"), tiny_model_dir, "float32", {s: tmp_path / f"{s}.parquet" for s in ("val", "ood")}, spec_path,
                 ["deployed", "hooked"], "target", key, tmp_path / "pred.parquet", tmp_path / "metrics.parquet")
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    assert sorted(zip(metrics["mode"], metrics["split"])) == [("deployed", "ood"), ("deployed", "val"),
                                                               ("hooked", "ood"), ("hooked", "val")]
    predictions = pd.read_parquet(tmp_path / "pred.parquet")
    deployed = predictions[predictions["mode"] == "deployed"]["logit_a"].to_numpy()
    hooked = predictions[predictions["mode"] == "hooked"]["logit_a"].to_numpy()
    assert len(predictions) == 48 and not (deployed == hooked).all()

    save_spec(random_directions(16, [0], 4, seed=0), tmp_path / "narrow.safetensors")
    from caft.ablation.specs import InterventionError

    with pytest.raises(InterventionError, match="16"):
        evaluate(EvaluationConfig(batch_size=5, precision="float32"), tiny_model_dir, "float32", {"val": tmp_path / "val.parquet"}, tmp_path / "narrow.safetensors",
                     ["hooked"], "target", key, tmp_path / "p2.parquet", tmp_path / "m2.parquet")
    save_spec(random_directions(32, [5], 4, seed=0), tmp_path / "deep.safetensors")
    with pytest.raises(InterventionError, match="out of range"):
        evaluate(EvaluationConfig(batch_size=5, precision="float32"), tiny_model_dir, "float32", {"val": tmp_path / "val.parquet"}, tmp_path / "deep.safetensors",
                     ["hooked"], "target", key, tmp_path / "p3.parquet", tmp_path / "m3.parquet")
    table.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    from caft.errors import DataError

    with pytest.raises(DataError, match="empty"):
        evaluate(EvaluationConfig(batch_size=5, precision="float32"), tiny_model_dir, "float32", {"val": tmp_path / "empty.parquet"}, None, ["deployed"], "target",
                 key, tmp_path / "p4.parquet", tmp_path / "m4.parquet")
