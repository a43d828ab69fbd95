"""Chat fine-tuning with LoRA for emergent misalignment, with the CAFT ablation hooks while training.

The adapters are the paper's (LoRA r 32, α 64, rsLoRA, dropout 0 on every attention and MLP projection);
the other defaults are the ``em.finetune`` section's (config/schema.yaml), sized for the offline SmolLM2-135M
default (config/em_paper.yaml holds the paper's recipe). The loss is the mean cross-entropy over all
assistant tokens of an optimizer step (`caft.finetune.objectives.AssistantTokens`); the loop, seeding,
schedule and resume state are the engine's (`caft.finetune.engine`), shared with the spurious half.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from caft.ablation.specs import InterventionSpec
from caft.artifacts import atomic_dir
from caft.config import dataclass_from_section
from caft.errors import ConfigError
from caft.finetune.engine import (
    LORA_TARGETS,
    LoraSettings,
    Recipe,
    Schedule,
    fit,
    training_subset,
)
from caft.finetune.objectives import AssistantTokens, encode_table
from caft.model.loading import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EM_LORA = LoraSettings(r=32, alpha=64, use_rslora=True, target_modules=LORA_TARGETS)
"""The paper's EM adapters (the ``em.finetune.lora`` defaults); a ``lora`` section changes the keys it names."""


@dataclass(frozen=True)
class SftConfig(Recipe):
    """One EM fine-tuning recipe (the ``em.finetune`` section, checked by config/schema.yaml): ``batch_size``
    examples per optimizer step, in ``gradient_accumulation`` parts.

    ``max_steps`` stops early (the paper's fewer-steps control; None = every step of every epoch); warmup is
    ``warmup_steps`` or ``warmup_ratio`` of all steps, not both (neither: no warmup).
    """

    SECTION: ClassVar[str] = "em.finetune"

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    train_fraction: float = 1.0
    lora: LoraSettings = EM_LORA
    warmup_steps: int | None = None
    warmup_ratio: float | None = None
    epochs: int = 1
    max_tokens: int = 384
    max_steps: int | None = None

    def __post_init__(self) -> None:
        """The checks between keys, which the schema cannot state."""
        where = self.SECTION
        if self.batch_size % self.gradient_accumulation:
            raise ConfigError(f"{where}.batch_size must be a multiple of {where}.gradient_accumulation")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ConfigError(f"{where}: set warmup_steps or warmup_ratio, not both")

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> SftConfig:
        """Build from the config section; a ``lora`` section changes the keys of `EM_LORA` it names."""
        values = dict(section)
        lora = dict(values.pop("lora", None) or {})
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        values["lora"] = replace(EM_LORA, **lora)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return dataclass_from_section(cls, values, cls.SECTION)

    def schedule(self, examples: int) -> Schedule:
        """Every step of every epoch, or the first ``max_steps``; warmup in steps or as a fraction of them."""
        steps_per_epoch = math.ceil(examples / self.batch_size)
        total = steps_per_epoch * self.epochs
        if self.max_steps is not None:
            total = min(self.max_steps, total)
        warmup = self.warmup_steps if self.warmup_steps is not None else round((self.warmup_ratio or 0.0) * total)
        return Schedule(steps_per_epoch, total, warmup)


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
    objective = AssistantTokens(encode_table(tokenizer, examples, cfg.max_tokens), tokenizer.pad_token_id,
                                cfg.precision)
    return fit(model, objective, cfg, cfg.schedule(len(examples)), seed, examples[["id", "messages"]], spec, mode,
               resume_dir, spec_digest)


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
