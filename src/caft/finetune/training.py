"""Fine-tuning on D_amb with optional ablation hooks: loss at the last prompt position only.

Each run starts from a freshly loaded model (never another run's weights). Randomness comes from
explicit generators: the training subset and the example order per epoch are drawn from
``purpose_rng(seed, ...)``; LoRA initialisation runs inside a forked, seeded torch RNG.
After every epoch the run state is saved, so a killed job resumes where it stopped and produces
the same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec
from caft.artifacts import atomic_dir, atomic_path
from caft.data.tasks import purpose_rng
from caft.errors import CaftError, ConfigError, DataError
from caft.model.precision import AUTO
from caft.model.prompts import encode_prompts, last_position_logits, letter_token_ids

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bf16-autocast", "bf16", AUTO)


class TrainingError(CaftError):
    """Training cannot go on (for example, the loss stopped being finite)."""


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    """The recipe of one run; ``batch_size`` examples per optimizer step in ``gradient_accumulation`` parts."""

    lr: float = 2e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = 0.5
    epochs: int = 5
    batch_size: int = 16
    gradient_accumulation: int = 1
    max_grad_norm: float | None = None
    freeze_embeddings: bool = False
    train_fraction: float = 1.0
    precision: str = "float32"
    lora: LoraSettings | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any], task_kind: str) -> TrainConfig:
        """Build from the ``finetune`` config section; ``epochs`` there is per task kind."""
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"finetune: unknown key(s) {sorted(unknown)}")
        values = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        values["epochs"] = int(section.get("epochs", {}).get(task_kind, cls.epochs))
        values["betas"] = tuple(values.get("betas", cls.betas))
        lora = values.get("lora")
        values["lora"] = None if lora is None else LoraSettings(**{
            k: tuple(v) if k == "target_modules" else v for k, v in lora.items()})
        config = cls(**values)
        if config.precision not in PRECISIONS:
            raise ConfigError(f"finetune.precision must be one of {PRECISIONS}, got {config.precision!r}")
        if config.batch_size % config.gradient_accumulation:
            raise ConfigError("finetune.batch_size must be a multiple of finetune.gradient_accumulation")
        return config


@dataclass
class RunState:
    """What is saved after each epoch to resume a killed run."""

    fingerprint: str
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def training_subset(table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The first ⌊fraction·n⌋ examples of a seeded permutation (the fewer-data control)."""
    if table.empty:
        raise DataError("the training split is empty")
    if fraction >= 1.0:
        return table.reset_index(drop=True)
    n = max(1, math.floor(fraction * len(table)))
    order = purpose_rng(seed, "train_fraction").permutation(len(table))[:n]
    return table.iloc[np.sort(order)].reset_index(drop=True)


def prepare_model(model: PreTrainedModel, cfg: TrainConfig, seed: int) -> PreTrainedModel:
    """Apply precision, embedding freezing and LoRA; return the module to optimize."""
    if cfg.precision == "bf16":
        model = model.to(torch.bfloat16)
    if cfg.freeze_embeddings:
        # Gemma ties the output head to the embedding: freezing one freezes both.
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_peft_model(model, LoraConfig(
                r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules)))
    model.train()
    return model


def fingerprint(cfg: TrainConfig, seed: int, table: pd.DataFrame, answer: str, spec_digest: str) -> str:
    """Identifies a run, so a stale resume state from another configuration is never picked up."""
    payload = json.dumps({"cfg": asdict(cfg), "seed": seed, "answer": answer, "spec": spec_digest}, sort_keys=True)
    digest = hashlib.sha256(payload.encode())
    digest.update(pd.util.hash_pandas_object(table[["prompt", answer]], index=False).values.tobytes())
    return digest.hexdigest()


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    table: pd.DataFrame,
    cfg: TrainConfig,
    seed: int,
    spec: InterventionSpec | None = None,
    answer: str = "target",
    resume_dir: Path | None = None,
    spec_digest: str = "",
    mode: str = "project",
) -> tuple[PreTrainedModel, list[dict[str, Any]]]:
    """Fine-tune ``model`` in place on ``table``, scored against column ``answer``, with ``spec`` ablated as
    ``mode`` says (see `caft.ablation.specs`); return the trained model and the per-step history."""
    examples = training_subset(table, cfg.train_fraction, seed)
    bad = ~examples[answer].isin(["A", "B"])
    if bad.any():
        raise DataError(f"training row {int(bad.idxmax())} has answer {examples[answer][bad].iloc[0]!r}; need A or B")
    letter_ids = letter_token_ids(tokenizer)
    targets = torch.tensor([letter_ids[a] for a in examples[answer]])
    model = prepare_model(model, cfg, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = _linear_schedule(optimizer, round(cfg.warmup_ratio * total), total)
    state = RunState(fingerprint(cfg, seed, examples, answer, spec_digest + (f":{mode}" if spec else "")))
    if resume_dir is not None:
        state = _resume(resume_dir, state, model, optimizer, scheduler)
    micro = cfg.batch_size // cfg.gradient_accumulation
    start = time.perf_counter() - (state.history[-1]["seconds"] if state.history else 0.0)
    with ablation_hooks(model, spec, mode):
        for epoch in range(state.epochs_done, cfg.epochs):
            order = purpose_rng(seed, f"order:{epoch}").permutation(len(examples))
            epoch_loss, epoch_correct = 0.0, 0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=5)
            for step in bar:
                batch_rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                loss_sum, correct = 0.0, 0
                for part in range(0, len(batch_rows), micro):
                    rows = batch_rows[part:part + micro]
                    loss, hits = _loss(model, tokenizer, examples["prompt"].iloc[rows], targets[rows], cfg)
                    (loss * len(rows) / len(batch_rows)).backward()
                    loss_sum += loss.item() * len(rows)
                    correct += hits
                mean_loss = loss_sum / len(batch_rows)
                if not math.isfinite(mean_loss):
                    raise TrainingError(f"non-finite loss {mean_loss} at epoch {epoch + 1}, step {step + 1}; "
                                        "try a lower finetune.lr or precision float32")
                lr = optimizer_step(params, optimizer, scheduler, cfg.max_grad_norm)
                record = {"step": epoch * steps_per_epoch + step + 1, "epoch": epoch + 1, "loss": mean_loss,
                          "accuracy": correct / len(batch_rows), "lr": lr,
                          "seconds": round(time.perf_counter() - start, 3)}
                state.history.append(record)
                epoch_loss += loss_sum
                epoch_correct += correct
                bar.set_postfix(loss=f"{mean_loss:.3f}", refresh=False)
            log.info("epoch %d/%d: loss %.4f, train accuracy %.3f, %.0f s", epoch + 1, cfg.epochs,
                     epoch_loss / len(examples), epoch_correct / len(examples), time.perf_counter() - start)
            state.epochs_done = epoch + 1
            if resume_dir is not None and state.epochs_done < cfg.epochs:
                _save_resume(resume_dir, state, model, optimizer, scheduler)
    if cfg.lora is not None:
        model = model.merge_and_unload()
    model.eval()
    return model, state.history


def _loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: pd.Series, targets: torch.Tensor,
          cfg: TrainConfig) -> tuple[torch.Tensor, int]:
    batch = encode_prompts(tokenizer, prompts.tolist())
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16-autocast"):
        logits = last_position_logits(model, batch)
    targets = targets.to(logits.device)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    return loss, int((logits.argmax(-1) == targets).sum())


def optimizer_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, max_grad_norm: float | None) -> float:
    """Clip (optionally), step the optimizer and the schedule, clear the gradients; the lr this step used."""
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak lr, then linear decay to zero (the paper's schedule)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def _save_resume(directory: Path, state: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Write the resume state as a whole directory, swapped in atomically."""
    from safetensors.torch import save_file

    with atomic_dir(directory) as tmp:
        save_file(_trainable_state(model), tmp / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))


def _resume(directory: Path, fresh: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> RunState:
    """Load a matching resume state if one exists; a state from another configuration is discarded."""
    from safetensors.torch import load_file

    state_file = directory / "state.json"
    if not state_file.is_file():
        return fresh
    saved = RunState(**json.loads(state_file.read_text()))
    if saved.fingerprint != fresh.fingerprint:
        log.info("discarding resume state in %s: it belongs to another configuration", directory)
        shutil.rmtree(directory)
        return fresh
    weights = load_file(directory / "trainable.safetensors")
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            named[name].copy_(tensor)
    extra = torch.load(directory / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    log.info("resuming from %s after epoch %d", directory, saved.epochs_done)
    return saved


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    """The JSON-lines training log: one line per optimizer step."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in history))
