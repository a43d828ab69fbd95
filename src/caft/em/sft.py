"""Chat fine-tuning with LoRA for emergent misalignment, with the CAFT ablation hooks while training.

The defaults are the paper's EM recipe: LoRA r 32, α 64, rsLoRA, dropout 0 on every attention and MLP
projection, lr 1e-5, one epoch, 16 examples per optimizer step. The loss is the mean cross-entropy over
all assistant tokens of an optimizer step, token-weighted across micro-batches, so gradient accumulation
changes memory use and nothing else. Seeding, the schedule and the per-epoch resume state are those of
`caft.finetune.training`, whose helpers this module reuses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import torch
from tqdm import tqdm

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec
from caft.artifacts import atomic_dir
from caft.config import dataclass_from_section
from caft.data.tasks import purpose_rng
from caft.em.chat_data import IGNORE, check_messages, encode_chat
from caft.errors import ConfigError, DataError
from caft.finetune.training import (
    PRECISIONS,
    RunState,
    TrainingError,
    _linear_schedule,
    _resume,
    _save_resume,
    optimizer_step,
    training_subset,
)
from caft.model.loading import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Encoded = list[tuple[list[int], list[int]]]
"""(input ids, labels) per example; labels are `IGNORE` except on assistant tokens."""


@dataclass(frozen=True)
class SftLora:
    """The adapters: rsLoRA scales the update by α/√r instead of α/r, so a larger r does not shrink it."""

    r: int = 32
    alpha: int = 64
    use_rslora: bool = True
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    merge: bool = False
    """Also write a merged checkpoint (what vLLM loads)."""


@dataclass(frozen=True)
class SftConfig:
    """One EM fine-tuning recipe: ``batch_size`` examples per optimizer step, in ``gradient_accumulation`` parts.

    ``max_steps`` stops early (the paper's fewer-steps control; None = every step of every epoch); warmup is
    ``warmup_steps`` or ``warmup_ratio`` of all steps, not both (a section giving the ratio drops the default steps).
    """

    SECTION: ClassVar[str] = "em.finetune"

    lr: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int | None = 5
    warmup_ratio: float | None = None
    epochs: int = 1
    batch_size: int = 16
    gradient_accumulation: int = 8
    max_tokens: int = 2048
    max_grad_norm: float | None = 1.0
    precision: str = "float32"
    train_fraction: float = 1.0
    max_steps: int | None = None
    lora: SftLora = field(default_factory=SftLora)

    def __post_init__(self) -> None:
        where = self.SECTION
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.gradient_accumulation < 1 or self.batch_size % self.gradient_accumulation:
            raise ConfigError(f"{where}.batch_size must be a multiple of {where}.gradient_accumulation")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ConfigError(f"{where}: set warmup_steps or warmup_ratio, not both")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"{where}.max_steps must be a positive integer or null, got {self.max_steps!r}")
        if self.epochs < 1:
            raise ConfigError(f"{where}.epochs must be at least 1, got {self.epochs!r}")

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> SftConfig:
        """Build from the config section; unknown keys (also under ``lora``) are errors."""
        values = dict(section)
        if "warmup_ratio" in values:
            values.setdefault("warmup_steps", None)
        lora = dict(values.pop("lora", None) or {})
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        values["lora"] = dataclass_from_section(SftLora, lora, f"{cls.SECTION}.lora")
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return dataclass_from_section(cls, values, cls.SECTION)


def base_of(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a peft wrapper (its decoder blocks are the ones to hook), else the model itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if get_base_model is not None else model


def encode_table(tokenizer: PreTrainedTokenizerBase, table: pd.DataFrame, max_tokens: int) -> Encoded:
    """The encoded examples of a chat table, in its order."""
    missing = {"id", "messages"} - set(table.columns)
    if missing:
        raise DataError(f"the chat table lacks column(s) {sorted(missing)}")
    encoded = []
    for row in table.itertuples(index=False):
        where = f"chat row {row.id!r}"
        try:
            messages = check_messages(json.loads(row.messages), where)
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}: messages is not valid JSON: {err}") from err
        encoded.append(encode_chat(tokenizer, messages, max_tokens, where))
    return encoded


def with_lora(model: PreTrainedModel, cfg: SftConfig, seed: int) -> PeftModel:
    """The model wrapped in fresh LoRA adapters, initialised from ``seed`` without touching the global RNG."""
    from peft import LoraConfig, get_peft_model

    if cfg.precision == "bf16":
        model = model.to(torch.bfloat16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, use_rslora=cfg.lora.use_rslora,
            target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
    model.train()
    return model


def fingerprint(cfg: SftConfig, seed: int, table: pd.DataFrame, spec_digest: str) -> str:
    """Identifies a run, so that a resume state of another configuration is never picked up."""
    payload = json.dumps({"cfg": asdict(cfg), "seed": seed, "spec": spec_digest}, sort_keys=True)
    digest = hashlib.sha256(payload.encode())
    digest.update(pd.util.hash_pandas_object(table[["id", "messages"]], index=False).values.tobytes())
    return digest.hexdigest()


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    table: pd.DataFrame,
    cfg: SftConfig,
    seed: int,
    spec: InterventionSpec | None = None,
    mode: str = "project",
    resume_dir: Path | None = None,
    spec_digest: str = "",
) -> tuple[PeftModel, list[dict[str, Any]]]:
    """LoRA-fine-tune ``model`` on the chat ``table`` (columns id, messages) with ``spec`` ablated as ``mode``
    says; return the peft model (adapters unmerged, in eval mode) and the per-step history.

    With ``resume_dir`` the state is saved after every epoch but the last and picked up by a rerun; the
    caller removes the folder once the adapter is saved.
    """
    examples = training_subset(table, cfg.train_fraction, seed)
    encoded = encode_table(tokenizer, examples, cfg.max_tokens)
    model = with_lora(model, cfg, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round((cfg.warmup_ratio or 0.0) * total)
    scheduler = _linear_schedule(optimizer, warmup, total)
    state = RunState(fingerprint(cfg, seed, examples, spec_digest + (f":{mode}" if spec else "")))
    if resume_dir is not None:
        state = _resume(resume_dir, state, model, optimizer, scheduler)
    epochs = math.ceil(total / steps_per_epoch)
    start = time.perf_counter() - (state.history[-1]["seconds"] if state.history else 0.0)
    with ablation_hooks(base_of(model), spec, mode):
        for epoch in range(state.epochs_done, epochs):
            order = purpose_rng(seed, f"order:{epoch}").permutation(len(encoded))
            steps = min(steps_per_epoch, total - epoch * steps_per_epoch)
            epoch_loss, epoch_tokens = 0.0, 0
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", mininterval=5)
            for step in bar:
                batch = [encoded[i] for i in order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
                loss, tokens = _accumulate(model, batch, cfg.batch_size // cfg.gradient_accumulation,
                                           tokenizer.pad_token_id, cfg.precision)
                if not math.isfinite(loss):
                    raise TrainingError(f"non-finite loss {loss} at epoch {epoch + 1}, step {step + 1}; "
                                        "try a lower lr or precision float32")
                lr = optimizer_step(params, optimizer, scheduler, cfg.max_grad_norm)
                state.history.append({"step": epoch * steps_per_epoch + step + 1, "epoch": epoch + 1, "loss": loss,
                                      "tokens": tokens, "lr": lr, "seconds": round(time.perf_counter() - start, 3)})
                epoch_loss += loss * tokens
                epoch_tokens += tokens
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            log.info("epoch %d/%d: loss %.4f over %d assistant tokens, %.0f s", epoch + 1, epochs,
                     epoch_loss / epoch_tokens, epoch_tokens, time.perf_counter() - start)
            state.epochs_done = epoch + 1
            if resume_dir is not None and state.epochs_done < epochs:
                _save_resume(resume_dir, state, model, optimizer, scheduler)
    model.eval()
    return model, state.history


def _accumulate(model: torch.nn.Module, batch: Encoded, micro: int, pad_id: int,
                precision: str) -> tuple[float, int]:
    """Forward and backward one optimizer step's examples in micro-batches of ``micro``; return the mean
    cross-entropy over all their assistant tokens, and how many there are."""
    tokens = sum(sum(label != IGNORE for label in labels[1:]) for _, labels in batch)
    device = next(model.parameters()).device
    loss_sum = 0.0
    for part in range(0, len(batch), micro):
        input_ids, attention_mask, labels = (t.to(device) for t in right_padded(batch[part:part + micro], pad_id))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        summed = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                   ignore_index=IGNORE, reduction="sum")
        (summed / tokens).backward()
        loss_sum += summed.item()
    return loss_sum / tokens, tokens


def right_padded(batch: Encoded, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, attention mask and labels [batch, longest], padded on the right (labels ignored there)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in batch])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
    labels = torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in batch])
    return input_ids, mask, labels


def save_adapter(model: PeftModel, tokenizer: PreTrainedTokenizerBase, directory: Path,
                 merged_directory: Path | None = None) -> torch.nn.Module:
    """Write the adapter (and the tokenizer) atomically; with ``merged_directory`` also a merged checkpoint.

    Merging folds the LoRA layers into the base weights in place, so use the returned model afterwards:
    the merged model if one was written, else ``model``.
    """
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    if merged_directory is None:
        return model
    merged = model.merge_and_unload()
    save_checkpoint(merged, tokenizer, merged_directory)
    return merged


def load_adapter(base_dir: Path, adapter_dir: Path,
                 dtype: str = "float32") -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The base checkpoint with the adapter on top, in eval mode, and its tokenizer.

    The adapter stays unmerged: merging into bf16 weights would round away small LoRA updates.
    """
    from peft import PeftModel

    base, tokenizer = load_checkpoint(base_dir, dtype)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return model, tokenizer


def condition_config(section: Mapping[str, Any], method: str, selector: str) -> SftConfig:
    """The recipe of one run; the ``fewer/steps{N}`` control trains the same recipe for N steps only."""
    cfg = SftConfig.from_config(dict(section))
    if method == "fewer":
        if not selector.startswith("steps") or not selector.removeprefix("steps").isdigit():
            raise ConfigError(f"em.runs.conditions: fewer/{selector}: expected fewer/steps<N>")
        cfg = replace(cfg, max_steps=int(selector.removeprefix("steps")))
    return cfg
