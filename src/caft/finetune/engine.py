"""The one training engine of both halves: seeded epochs of optimizer steps with the CAFT hooks attached,
a per-epoch resume state, and a history line per step.

What is trained on is an *objective* (`caft.finetune.objectives`): the answer letter at the last prompt
position (the spurious-correlation tasks) or every assistant token of a chat (emergent misalignment). The
recipe — optimizer, schedule, precision, LoRA — is a `Recipe`; everything else here is shared.

Randomness comes from explicit generators: the training subset and the example order per epoch are drawn
from ``purpose_rng(seed, ...)``; LoRA initialisation runs inside a forked, seeded torch RNG. After every
epoch but the last the run state is saved, so a killed job resumes where it stopped and produces the same
result as an uninterrupted one.
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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec
from caft.artifacts import atomic_dir, atomic_path
from caft.data.tasks import purpose_rng
from caft.errors import CaftError, DataError
from caft.model.precision import AUTO

if TYPE_CHECKING:  # transformers is imported by whoever loads a model; these are only annotations
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingError(CaftError):
    """Training cannot go on (for example, the loss stopped being finite)."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters on the named projections; rsLoRA scales the update by α/√r instead of α/r, so a larger
    r does not shrink it. ``merge``: the EM half also writes a merged checkpoint (the spurious half always
    merges, its checkpoints are plain models)."""

    r: int = 16
    alpha: float = 16
    dropout: float = 0.0
    use_rslora: bool = False
    target_modules: tuple[str, ...] = LORA_TARGETS
    merge: bool = False


@dataclass(frozen=True)
class Recipe:
    """What every run's optimizer and precision need, with the ``finetune`` section's defaults (the
    schema's, config/schema.yaml); `caft.finetune.training.TrainConfig` and `caft.em.sft.SftConfig` add
    their half's keys (and the EM half its own defaults, the ``em.finetune`` section's)."""

    lr: float = 4e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_grad_norm: float | None = None
    precision: str = AUTO
    train_fraction: float = 0.5
    lora: LoraSettings | None = None

    @property
    def micro_batch(self) -> int:
        """Examples per forward/backward: ``batch_size`` per optimizer step in ``gradient_accumulation`` parts."""
        return self.batch_size // self.gradient_accumulation


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps, and where the linear warmup ends."""

    steps_per_epoch: int
    total: int
    warmup: int

    @property
    def epochs(self) -> int:
        return math.ceil(self.total / self.steps_per_epoch)

    def steps_in(self, epoch: int) -> int:
        """Steps of ``epoch`` (0-based): the last epoch is cut short when ``total`` stops inside it."""
        return min(self.steps_per_epoch, self.total - epoch * self.steps_per_epoch)


@dataclass(frozen=True)
class StepResult:
    """One optimizer step as an objective saw it: the mean loss over its ``units`` (examples or tokens),
    the fields it adds to the history line, and the correct answers (None where there is no answer)."""

    loss: float
    units: int
    record: dict[str, Any]
    correct: int | None = None


class Objective(Protocol):
    """What the engine trains on: ``size`` examples, stepped through by row indices."""

    size: int
    unit: str

    def step(self, model: torch.nn.Module, rows: np.ndarray, micro: int) -> StepResult:
        """Forward and backward the rows in parts of ``micro``, gradients scaled to the step's mean loss."""


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


def base_of(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a peft wrapper (its decoder blocks are the ones to hook), else the model itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if get_base_model is not None else model


def prepare_model(model: PreTrainedModel, recipe: Recipe, seed: int, freeze_embeddings: bool = False) -> torch.nn.Module:
    """Apply precision, embedding freezing and LoRA (initialised from ``seed`` without touching the global
    RNG); return the module to optimize, in training mode."""
    if recipe.precision == "bf16":
        model = model.to(torch.bfloat16)
    if freeze_embeddings:
        # Gemma ties the output head to the embedding: freezing one freezes both.
        model.get_input_embeddings().weight.requires_grad_(False)
    if recipe.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = recipe.lora
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_rslora=lora.use_rslora,
                target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    model.train()
    return model


def fingerprint(recipe: Recipe, seed: int, data: pd.DataFrame, spec_digest: str, **extra: Any) -> str:
    """Identifies a run, so a resume state from another configuration is never picked up."""
    payload = json.dumps({"cfg": asdict(recipe), "seed": seed, "spec": spec_digest, **extra}, sort_keys=True)
    digest = hashlib.sha256(payload.encode())
    digest.update(pd.util.hash_pandas_object(data, index=False).values.tobytes())
    return digest.hexdigest()


def fit(
    model: PreTrainedModel,
    objective: Objective,
    recipe: Recipe,
    schedule: Schedule,
    seed: int,
    data: pd.DataFrame,
    spec: InterventionSpec | None,
    mode: str,
    resume_dir: Path | None,
    spec_digest: str,
    freeze_embeddings: bool = False,
    **extra: Any,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """What both halves do with their objective: prepare the model, identify the run (``data``: the
    training rows' columns that define it) and train it; the trained module and its history."""
    model = prepare_model(model, recipe, seed, freeze_embeddings)
    run = fingerprint(recipe, seed, data, spec_digest + (f":{mode}" if spec else ""), **extra)
    history = run_training(model, objective, recipe, schedule, seed, run, spec, mode, resume_dir)
    return model, history


def run_training(
    model: torch.nn.Module,
    objective: Objective,
    recipe: Recipe,
    schedule: Schedule,
    seed: int,
    run_fingerprint: str,
    spec: InterventionSpec | None = None,
    mode: str = "project",
    resume_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Train the prepared ``model`` in place on ``objective`` with ``spec`` ablated as ``mode`` says (see
    `caft.ablation.specs`); return the per-step history. The model is left in eval mode."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, recipe)
    scheduler = linear_schedule(optimizer, schedule.warmup, schedule.total)
    state = RunState(run_fingerprint)
    if resume_dir is not None:
        state = _resume(resume_dir, state, model, optimizer, scheduler)
    start = time.perf_counter() - (state.history[-1]["seconds"] if state.history else 0.0)
    epochs = schedule.epochs
    with ablation_hooks(base_of(model), spec, mode):
        for epoch in range(state.epochs_done, epochs):
            order = purpose_rng(seed, f"order:{epoch}").permutation(objective.size)
            epoch_loss, epoch_units, epoch_correct = 0.0, 0, 0
            bar = tqdm(range(schedule.steps_in(epoch)), desc=f"epoch {epoch + 1}/{epochs}", mininterval=5)
            for step in bar:
                rows = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                result = objective.step(model, rows, recipe.micro_batch)
                if not math.isfinite(result.loss):
                    raise TrainingError(f"non-finite loss {result.loss} at epoch {epoch + 1}, step {step + 1}; "
                                        "try a lower lr or precision float32")
                lr = optimizer_step(params, optimizer, scheduler, recipe.max_grad_norm)
                state.history.append({"step": epoch * schedule.steps_per_epoch + step + 1, "epoch": epoch + 1,
                                      "loss": result.loss, **result.record, "lr": lr,
                                      "seconds": round(time.perf_counter() - start, 3)})
                epoch_loss += result.loss * result.units
                epoch_units += result.units
                epoch_correct += result.correct or 0
                bar.set_postfix(loss=f"{result.loss:.3f}", refresh=False)
            accuracy = "" if result.correct is None else f", train accuracy {epoch_correct / epoch_units:.3f}"
            log.info("epoch %d/%d: loss %.4f over %d %s%s, %.0f s", epoch + 1, epochs, epoch_loss / epoch_units,
                     epoch_units, objective.unit, accuracy, time.perf_counter() - start)
            state.epochs_done = epoch + 1
            if resume_dir is not None and state.epochs_done < epochs:
                _save_resume(resume_dir, state, model, optimizer, scheduler)
    model.eval()
    return state.history


def adamw(params: list[torch.nn.Parameter], recipe: Recipe) -> torch.optim.AdamW:
    """The recipe's AdamW, fused into one kernel per step where the parameters' device has one (CPU, CUDA).

    PyTorch's default (`foreach`) runs a dozen element-wise passes over every parameter; on 2 CPU cores they
    took a fifth of a fine-tuning step, and the fused kernel makes the step 1.2× faster
    (docs/benchmarks.md). The update is the same formula; float rounding differs in the last bits.
    """
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay,
                             fused=fused or None)


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


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
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
