"""Fine-tuning on D_amb with optional ablation hooks: the loss at the last prompt position only.

Each run starts from a freshly loaded model (never another run's weights); the loop, seeding, schedule
and resume state are the engine's (`caft.finetune.engine`), shared with the EM half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from caft.ablation.specs import InterventionSpec
from caft.errors import ConfigError
from caft.finetune.engine import (
    LoraSettings,
    Recipe,
    Schedule,
    fit,
    training_subset,
)
from caft.finetune.objectives import LastPositionAnswer

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """The recipe of one run (the ``finetune`` section, checked by config/schema.yaml); ``epochs`` is the
    one of the run's task kind (the schema's default is the same for both kinds)."""

    warmup_ratio: float = 0.5
    epochs: int = 2
    freeze_embeddings: bool = True

    @classmethod
    def from_config(cls, section: dict[str, Any], task_kind: str) -> TrainConfig:
        """Build from the ``finetune`` section; ``epochs`` there is per task kind."""
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"finetune: unknown key(s) {sorted(unknown)}")
        values = dict(section)
        values["epochs"] = int(section.get("epochs", {}).get(task_kind, cls.epochs))
        values["betas"] = tuple(values.get("betas", cls.betas))
        lora = values.get("lora")
        values["lora"] = None if lora is None else LoraSettings(**{
            k: tuple(v) if k == "target_modules" else v for k, v in lora.items()})
        config = cls(**values)
        if config.batch_size % config.gradient_accumulation:
            raise ConfigError("finetune.batch_size must be a multiple of finetune.gradient_accumulation")
        return config

    def schedule(self, examples: int) -> Schedule:
        """Every step of every epoch; the warmup a fraction of them."""
        steps_per_epoch = math.ceil(examples / self.batch_size)
        total = steps_per_epoch * self.epochs
        return Schedule(steps_per_epoch, total, round(self.warmup_ratio * total))


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
    """Fine-tune ``model`` on ``table``, scored against column ``answer``, with ``spec`` ablated as ``mode``
    says; return the trained model (LoRA merged into it) and the per-step history."""
    examples = training_subset(table, cfg.train_fraction, seed)
    objective = LastPositionAnswer(tokenizer, examples, answer, cfg.precision)
    model, history = fit(model, objective, cfg, cfg.schedule(len(examples)), seed, examples[["prompt", answer]],
                         spec, mode, resume_dir, spec_digest, freeze_embeddings=cfg.freeze_embeddings, answer=answer)
    if cfg.lora is not None:
        model = model.merge_and_unload()
        model.eval()
    return model, history
