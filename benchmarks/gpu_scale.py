"""Paper-scale costs on one GPU, measured on randomly initialised Gemma 2 2B and Gemma 3 270M, and the
GPU-hours of the paper's sweeps estimated from them.

Usage (on a GPU machine; nothing is downloaded, the models are built from the configs written below):

    PYTHONPATH=src python benchmarks/gpu_scale.py --out gpu_scale.json [--seconds-budget 420]
    .venv/bin/python benchmarks/gpu_scale.py --smoke --out /tmp/gpu_scale.json   # CPU, tiny shapes, seconds

What it measures, each printed as a table row and written to the JSON:

1. a training step as the workflow takes it under ``config/paper.yaml``'s recipe: pure bfloat16 weights
   (``precision: bf16``, no autocast), AdamW with the recipe's lr, betas and weight decay, full
   fine-tuning, cross-entropy at the last position only; per batch shape, with and without projection
   hooks (`caft.ablation.ablate.ablation_hooks`, mode ``project``, random 5-dim subspaces at every
   layer), the two interleaved step by step. FLOPs per step are counted by ``FlopCounterMode`` on one
   unhooked step (6·params·tokens is written beside it: it overcounts here, the head runs at one
   position); model FLOPs utilisation divides them by the median step time and the device's dense bf16
   peak (``PEAK_BF16``; null on other devices);
2. attribution (`caft.directions.attribution.latent_attribution`, the function behind
   ``attribution_scores``) with a 16k-latent JumpReLU SAE at each of Gemma 2 2B's 26 layers: seconds per
   256 prompts;
3. evaluation as `caft.finetune.evaluation.predict` runs it (inference mode, last-position logits,
   the A/B pair and the argmax copied back): prompts per second over 600 prompts;
4. GPU-hours of the gender sweep and of all 17 tasks, 5 seeds × 3 conditions, estimated from 1–3 with
   the recipe read from ``config/paper.yaml`` and the assumptions written into the JSON.

There is no tokenizer (no hub): prompts are random token ids of a fixed length after BOS, unpadded, and
the answers are two fixed token ids, so the step and the metric are `LastPositionAnswer.loss`'s and
attribution's own computation on ids. `caft.finetune.objectives` is not imported: it pulls in the endpoint
clients (httpx, tenacity), which the GPU image lacks; for the same reason an SAE falls back to
`JumpReluSae` (sae-lens's JumpReLU encoding, checked against sae-lens by the tests) where sae-lens is not
installed. ``benchmarks/finetune_costs.py`` is not imported either: it imports that module, and its
timers neither synchronise CUDA nor stop on a budget.

The run is bounded by ``--seconds-budget``: each timed loop gets an equal share of what is left, keeps the
rounds it finished (at least one) and records ``stopped_early``. A section that fails records its error and
the rest still run; the JSON is rewritten after every section, so a killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec, random_directions
from caft.artifacts import atomic_path
from caft.directions.attribution import MetricBatch, latent_attribution
from caft.finetune.engine import Recipe, adamw, linear_schedule, optimizer_step, prepare_model
from caft.model.loading import hidden_size, num_layers
from caft.model.prompts import last_position_logits

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"

PEAK_BF16 = (("H100 80GB HBM3", 989e12), ("H100 SXM", 989e12), ("H200", 989e12))
"""Dense bf16 tensor-core peak (FLOP/s) by a part of ``torch.cuda.get_device_name()``: H100 SXM, H200."""

DIRECTIONS_PER_LAYER = 5
ANSWER_IDS = (3, 4)
"""Any two token ids stand for " A" and " B": random weights make every id alike."""

ASSUMPTIONS = {
    "gender_train_examples": 800,
    "gender_eval_prompts": 400,
    "mcmc_train_examples": 1400,
    "mcmc_eval_prompts": 600,
    "mcmc_tasks": 16,
    "conditions": ["none", "CAFT-SAE", "CAFT-PCA"],
    "evaluation_passes_per_task_and_seed": 7,
    "notes": [
        "D_amb sizes: gender 800 (the built-in frames' 80 %; the paper's hub set may differ), MCMC "
        "floor(0.7 * 2000) = 1400 (mcmc.splits.max_examples 2000, both sources at least that large); "
        "evaluation = D_val + D_OOD, gender 200 + 200, MCMC 300 + 300",
        "every prompt costs what a prompt of the measured length (64 tokens in the GPU run) does; real "
        "prompts are left-padded to their batch's longest",
        "training: ceil(examples / batch_size) * epochs steps per run at the measured median step time "
        "(unhooked for none, hooked for both CAFT conditions, without the per-step opening of the hooks); "
        "the hooks ablate 5 directions per layer",
        "evaluation per task and seed: none deployed, each CAFT condition deployed and hooked, and "
        "test-only (the none model with each condition's hooks) = 7 passes over the evaluation prompts, "
        "hooked passes costed as unhooked ones",
        "per task: attribution over every D_amb prompt once (base model), and PCA's activations as two "
        "forward passes over D_amb (base and the reused none seed-0 model) at the evaluation rate",
        "not counted: model and SAE loading, job start-up, checkpoint writes, the corpus, windows, "
        "dashboards, explanations and the exact-ablation check of the top latents",
    ],
}


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the paper-scale run and the smoke run."""

    models: dict[str, Callable[[], Any]]
    shapes: tuple[tuple[int, int], ...]
    estimate_shape: tuple[int, int]
    """The (batch, tokens) whose step times the estimates use: the paper's batch at the prompts' length."""
    warmup: int
    rounds: int
    sae_width: int
    attribution_prompts: int
    eval_prompts: int
    eval_tokens: int
    pass_rounds: int
    """Rounds of the whole-pass measurements (attribution, evaluation)."""
    matmul_size: int


def gemma2_2b(**small: int) -> Any:
    """Gemma 2 2B's shape (google/gemma-2-2b's config.json); ``small`` overrides sizes for the smoke run."""
    from transformers import Gemma2Config

    sizes = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096) | small
    return Gemma2Config(**sizes, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                        query_pre_attn_scalar=256, tie_word_embeddings=True)


def gemma3_270m(**small: int) -> Any:
    """Gemma 3 270M's shape (google/gemma-3-270m's text config); ``small`` overrides sizes for the smoke run."""
    from transformers import Gemma3TextConfig

    sizes = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                 num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512) | small
    return Gemma3TextConfig(**sizes, query_pre_attn_scalar=256, tie_word_embeddings=True)


TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, sliding_window=16)

PAPER_SCALE = Scale(
    models={"gemma-2-2b": gemma2_2b, "gemma-3-270m": gemma3_270m},
    shapes=((8, 64), (16, 64), (8, 256)), estimate_shape=(16, 64), warmup=3, rounds=10, sae_width=16384,
    attribution_prompts=256, eval_prompts=600, eval_tokens=64, pass_rounds=3, matmul_size=8192,
)
SMOKE_SCALE = Scale(
    models={"gemma-2-2b": lambda: gemma2_2b(**TINY), "gemma-3-270m": lambda: gemma3_270m(**TINY)},
    shapes=((4, 8),), estimate_shape=(4, 8), warmup=1, rounds=2, sae_width=128,
    attribution_prompts=16, eval_prompts=24, eval_tokens=8, pass_rounds=2, matmul_size=256,
)


class JumpReluSae(torch.nn.Module):
    """sae-lens's JumpReLU SAE at inference, for machines without sae-lens: z = ReLU(p)·[p > θ] with
    p = (x − b_dec) W_enc + b_enc, and the config fields `check_sae` reads. Initialised as sae-lens does
    (kaiming-uniform W_dec, W_enc = W_decᵀ, zero biases and thresholds)."""

    @dataclass(frozen=True)
    class Config:
        d_in: int
        d_sae: int
        normalize_activations: str = "none"
        reshape_activations: str = "none"

        @staticmethod
        def architecture() -> str:
            return "jumprelu"

    def __init__(self, d_in: int, d_sae: int, device: torch.device) -> None:
        super().__init__()
        self.cfg = self.Config(d_in, d_sae)
        self.activation_fn = torch.nn.ReLU()
        w_dec = torch.empty(d_sae, d_in, device=device)
        torch.nn.init.kaiming_uniform_(w_dec)
        self.W_dec = torch.nn.Parameter(w_dec)
        self.W_enc = torch.nn.Parameter(w_dec.T.clone().contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=device))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))
        self.threshold = torch.nn.Parameter(torch.zeros(d_sae, device=device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc
        return self.activation_fn(pre) * (pre > self.threshold).to(pre.dtype)


def random_sae(d_in: int, d_sae: int, device: torch.device) -> tuple[torch.nn.Module, str]:
    """A randomly initialised JumpReLU SAE in float32 on ``device`` (weights do not change the cost: every
    latent is encoded densely), and which implementation it is."""
    try:
        from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    except ImportError:
        return JumpReluSae(d_in, d_sae, device).requires_grad_(False), "JumpReluSae (sae-lens not installed)"
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, device=str(device)))
    return sae.requires_grad_(False), "sae_lens.JumpReLUSAE"


class Budget:
    """The run's wall-clock allowance, shared out among the timed loops still to come."""

    def __init__(self, seconds: float, loops: int) -> None:
        self.deadline = time.perf_counter() + seconds
        self.loops = loops

    def spent(self) -> bool:
        return time.perf_counter() >= self.deadline

    def share(self) -> float:
        """Seconds the next loop may use: an equal part of what is left, so fast loops leave more to later ones."""
        share = max(0.0, self.deadline - time.perf_counter()) / max(1, self.loops)
        self.loops -= 1
        return share


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``fn`` with the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(conditions: dict[str, Callable[[], object]], device: torch.device, warmup: int, rounds: int,
                allowance: float) -> dict[str, Any]:
    """Median seconds per condition: ``warmup`` calls each, then rounds A, B, A, B … until ``rounds`` or the
    allowance (warm-up included) is used up, but at least one round."""
    start = time.perf_counter()
    for _ in range(warmup):
        for fn in conditions.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for done in range(rounds):
        if done and time.perf_counter() - start > allowance:
            break
        for name, fn in conditions.items():
            times[name].append(seconds_of(fn, device))
    finished = len(next(iter(times.values())))
    return {"median_s": {name: statistics.median(values) for name, values in times.items()},
            "rounds": finished, "rounds_requested": rounds, "stopped_early": finished < rounds}


def random_ids(config: Any, rows: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, tokens] token ids: BOS, then random ids other than BOS, padding and the answers."""
    ids = torch.randint(max(ANSWER_IDS) + 1, config.vocab_size, (rows, tokens), generator=generator)
    ids[:, 0] = config.bos_token_id
    return ids


def prompt_batch(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """What `encode_prompts` returns for prompts of equal length: the ids and an all-ones mask."""
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in PEAK_BF16 if part in name), None)


def matmul_rate(device: torch.device, n: int) -> float:
    """Achieved FLOP/s of an n×n bf16 matrix product: the practical ceiling beside the data-sheet peak."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    timing = interleaved({"mm": lambda: a @ b}, device, warmup=2, rounds=5, allowance=math.inf)
    return 2 * n**3 / timing["median_s"]["mm"]


def training(model: torch.nn.Module, recipe: Recipe, shape: tuple[int, int], optimizer: torch.optim.Optimizer,
             scheduler: Any, spec: InterventionSpec, scale: Scale, budget: Budget, device: torch.device) -> dict:
    """One batch shape: step times with and without the hooks, interleaved, and what they imply."""
    rows, tokens = shape
    generator = torch.Generator().manual_seed(rows * 1000 + tokens)
    batch = prompt_batch(random_ids(model.config, rows, tokens, generator))
    targets = torch.tensor(ANSWER_IDS)[torch.randint(0, 2, (rows,), generator=generator)].to(device)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        logits = last_position_logits(model, batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        loss.backward()
        loss.item(), int((logits.argmax(-1) == targets).sum())  # the history line's loss and accuracy
        optimizer_step(params, optimizer, scheduler, recipe.max_grad_norm)

    def hooked() -> None:
        with ablation_hooks(model, spec, "project"):
            step()

    def hooks_only() -> None:
        with ablation_hooks(model, spec, "project"):
            pass

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    timing = interleaved({"none": step, "hooked": hooked, "hooks_only": hooks_only}, device, scale.warmup,
                         scale.rounds, budget.share())
    none, with_hooks = timing["median_s"]["none"], timing["median_s"]["hooked"]
    # The workflow opens the hooks once per run; here every hooked step opens them (validating the spec and
    # moving its bases to the device), so that cost is timed alone and taken off for the net figures.
    net = with_hooks - timing["median_s"]["hooks_only"]
    peak = peak_flops(device)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "batch": rows, "tokens": tokens, "step_s_none": none, "step_s_hooked": with_hooks,
        "hooks_enter_exit_s": timing["median_s"]["hooks_only"], "step_s_hooked_net": net,
        "hooked_ratio": with_hooks / none, "hooked_ratio_net": net / none, "tokens_per_s_none": rows * tokens / none,
        "tokens_per_s_hooked": rows * tokens / with_hooks,
        "flops_per_step_counted": flops, "flops_per_step_6nt": 6 * n_params * rows * tokens,
        "mfu_none": None if peak is None else flops / none / peak,
        "mfu_hooked_net": None if peak is None else flops / net / peak,
        **{key: timing[key] for key in ("rounds", "rounds_requested", "stopped_early")},
    }


def logit_difference(model: torch.nn.Module, batch: dict[str, torch.Tensor], correct: torch.Tensor,
                     other: torch.Tensor) -> torch.Tensor:
    """Attribution's metric m per row: logit(correct) − logit(other) at the last position, float32."""
    logits = last_position_logits(model, batch).float()
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, correct.to(logits.device)] - logits[rows, other.to(logits.device)]


def attribution(model: torch.nn.Module, batch_size: int, scale: Scale, budget: Budget,
                device: torch.device) -> dict:
    """Seconds per 256 prompts of `latent_attribution` with a random JumpReLU SAE at every layer."""
    built = [random_sae(hidden_size(model), scale.sae_width, device) for _ in range(num_layers(model))]
    saes, implementation = {layer: sae for layer, (sae, _) in enumerate(built)}, built[0][1]
    generator = torch.Generator().manual_seed(0)
    ids = random_ids(model.config, scale.attribution_prompts, scale.eval_tokens, generator)
    letters = torch.tensor(ANSWER_IDS)[torch.randint(0, 2, (len(ids),), generator=generator)]
    correct, other = letters, sum(ANSWER_IDS) - letters

    def batches(count: int):
        for start in range(0, count, batch_size):
            batch = prompt_batch(ids[start:start + batch_size])
            positions = batch["attention_mask"].bool() & (batch["input_ids"] != model.config.bos_token_id)
            part = slice(start, start + batch_size)
            yield MetricBatch(positions, lambda b=batch, p=part: logit_difference(model, b, correct[p], other[p]))

    def run() -> None:
        latent_attribution(model, saes, batches(len(ids)), len(ids))

    timing = interleaved({"attribution": run}, device, 1, scale.pass_rounds, budget.share())
    seconds = timing["median_s"]["attribution"]
    return {"layers": len(saes), "d_sae": scale.sae_width, "sae": implementation, "prompts": len(ids),
            "tokens": scale.eval_tokens, "batch_size": batch_size, "seconds": seconds,
            "seconds_per_256_prompts": seconds * 256 / len(ids),
            **{key: timing[key] for key in ("rounds", "rounds_requested", "stopped_early")}}


def evaluation(model: torch.nn.Module, batch_size: int, scale: Scale, budget: Budget, device: torch.device) -> dict:
    """Prompts per second of `predict`'s loop: inference-mode last-position logits, A/B pair and argmax to the CPU."""
    ids = random_ids(model.config, scale.eval_prompts, scale.eval_tokens, torch.Generator().manual_seed(1))
    pair = list(ANSWER_IDS)

    def run() -> None:
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                logits = last_position_logits(model, prompt_batch(ids[start:start + batch_size]))
                logits[:, pair].float().cpu()
                logits.argmax(dim=-1).cpu()

    model.eval()
    timing = interleaved({"evaluation": run}, device, 1, scale.pass_rounds, budget.share())
    seconds = timing["median_s"]["evaluation"]
    return {"prompts": len(ids), "tokens": scale.eval_tokens, "batch_size": batch_size, "seconds": seconds,
            "prompts_per_s": len(ids) / seconds,
            **{key: timing[key] for key in ("rounds", "rounds_requested", "stopped_early")}}


def run_section(report: dict, path: tuple[str, ...], budget: Budget, fn: Callable[[], dict], out: Path) -> None:
    """Store ``fn()``'s result at ``path`` in the report, or why there is none, and rewrite the JSON."""
    node = report
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if budget.spent():
        budget.loops -= 1
        node[path[-1]] = {"skipped": "the seconds budget was spent before this section"}
    else:
        try:
            node[path[-1]] = fn()
        except Exception as err:  # keep measuring the rest: the GPU run is one attempt
            traceback.print_exc()
            node[path[-1]] = {"error": f"{type(err).__name__}: {err}"}
    write_json(report, out)


def write_json(report: dict, out: Path) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_model(name: str, scale: Scale, paper: dict, report: dict, budget: Budget, device: torch.device,
                  out: Path) -> None:
    """Build one model, time its training steps (then attribution, for Gemma 2 2B) and its evaluation."""
    from transformers import AutoModelForCausalLM

    finetune = paper["finetune"]
    recipe = Recipe(lr=finetune["lr"], weight_decay=finetune["weight_decay"], betas=tuple(finetune["betas"]),
                    batch_size=finetune["batch_size"], max_grad_norm=finetune["max_grad_norm"],
                    precision=finetune["precision"], train_fraction=finetune["train_fraction"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(scale.models[name](), dtype=getattr(torch, paper["model"]["dtype"]))
    model = model.to(device)  # a no-op unless the release built it elsewhere
    model = prepare_model(model, recipe, seed=0, freeze_embeddings=finetune["freeze_embeddings"])
    synchronize(device)
    report["models"][name] = {
        "parameters": sum(p.numel() for p in model.parameters()), "layers": num_layers(model),
        "hidden_size": hidden_size(model), "vocab_size": model.config.vocab_size,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "attention": model.config._attn_implementation, "build_s": time.perf_counter() - start,
    }
    train_shapes(name, model, recipe, scale, report, budget, device, out)
    model.zero_grad(set_to_none=True)  # the optimizer's state went with train_shapes: only Gemma's weights stay
    free(device)
    if name == "gemma-2-2b":
        run_section(report, ("attribution", name), budget,
                    lambda: attribution(model, paper["attribution"]["batch_size"], scale, budget, device), out)
        free(device)
    run_section(report, ("evaluation", name), budget,
                lambda: evaluation(model, paper["evaluation"]["batch_size"], scale, budget, device), out)
    if device.type == "cuda":
        report["models"][name]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def train_shapes(name: str, model: torch.nn.Module, recipe: Recipe, scale: Scale, report: dict, budget: Budget,
                 device: torch.device, out: Path) -> None:
    """The training sections of one model, sharing one AdamW (the recipe's) and one hook spec."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, recipe)
    scheduler = linear_schedule(optimizer, warmup=0, total=10_000)
    spec = random_directions(hidden_size(model), range(num_layers(model)), DIRECTIONS_PER_LAYER, seed=0)
    for shape in scale.shapes:
        run_section(report, ("training", name, "x".join(map(str, shape))), budget,
                    lambda s=shape: training(model, recipe, s, optimizer, scheduler, spec, scale, budget, device), out)


def estimates(report: dict, paper: dict, scale: Scale) -> dict:
    """GPU-hours of the gender sweep and of all 17 tasks from Gemma 2 2B's measurements (see ASSUMPTIONS)."""
    model = "gemma-2-2b"
    step = report["training"][model]["x".join(map(str, scale.estimate_shape))]
    per_256 = report["attribution"][model]["seconds_per_256_prompts"]
    prompts_per_s = report["evaluation"][model]["prompts_per_s"]
    batch, epochs, seeds = paper["finetune"]["batch_size"], paper["finetune"]["epochs"], len(paper["runs"]["seeds"])
    caft_conditions = len(ASSUMPTIONS["conditions"]) - 1

    def task(examples: int, eval_prompts: int, task_epochs: int) -> dict[str, float]:
        steps = math.ceil(examples / batch) * task_epochs
        return {
            "training": seeds * steps * (step["step_s_none"] + caft_conditions * step["step_s_hooked_net"]),
            "attribution": examples / 256 * per_256,
            "pca_activations": 2 * examples / prompts_per_s,
            "evaluation": seeds * ASSUMPTIONS["evaluation_passes_per_task_and_seed"] * eval_prompts / prompts_per_s,
        }

    gender = task(ASSUMPTIONS["gender_train_examples"], ASSUMPTIONS["gender_eval_prompts"], epochs["frames"])
    mcmc = task(ASSUMPTIONS["mcmc_train_examples"], ASSUMPTIONS["mcmc_eval_prompts"], epochs["mcmc"])
    every = {part: gender[part] + ASSUMPTIONS["mcmc_tasks"] * mcmc[part] for part in gender}

    def hours(seconds: dict[str, float]) -> dict[str, float]:
        return {**{f"{part}_gpu_hours": s / 3600 for part, s in seconds.items()},
                "total_gpu_hours": sum(seconds.values()) / 3600}

    return {
        "gender_sweep": hours(gender), "all_17_tasks": hours(every),
        "recipe": {"batch_size": batch, "epochs": epochs, "seeds": seeds, "lr": paper["finetune"]["lr"],
                   "precision": paper["finetune"]["precision"], "source": str(PAPER_CONFIG.name)},
        "step_shape": list(scale.estimate_shape), "assumptions": ASSUMPTIONS,
    }


def print_tables(report: dict) -> None:
    meta = report["meta"]
    print(f"device {meta['device_name']} | torch {meta['torch']} | transformers {meta['transformers']} | "
          f"{meta['precision']} | {meta['wall_s']:.0f} s of a {meta['seconds_budget']:.0f} s budget")
    if meta["matmul_bf16_tflops"] is not None:
        print(f"bf16 matmul {meta['matmul_size']}³: {meta['matmul_bf16_tflops']:.0f} TFLOP/s measured, "
              f"peak {meta['peak_bf16_tflops']} TFLOP/s")
    print(f"{'model':13s} {'batch':>6s} {'none s':>8s} {'hooked s':>9s} {'ratio':>6s} {'net':>6s} {'tokens/s':>9s} "
          f"{'GFLOP/step':>10s} {'MFU':>6s} rounds")
    for name, shapes in report["training"].items():
        for shape, row in shapes.items():
            if "step_s_none" not in row:
                print(f"{name:13s} {shape:>6s} {row}")
                continue
            mfu = "-" if row["mfu_none"] is None else f"{row['mfu_none']:.1%}"
            print(f"{name:13s} {shape:>6s} {row['step_s_none']:8.4f} {row['step_s_hooked']:9.4f} "
                  f"{row['hooked_ratio']:6.3f} {row['hooked_ratio_net']:6.3f} {row['tokens_per_s_none']:9.0f} "
                  f"{row['flops_per_step_counted'] / 1e9:10.1f} {mfu:>6s} {row['rounds']}"
                  f"{' (stopped early)' if row['stopped_early'] else ''}")
    for name, row in report["attribution"].items():
        if "seconds_per_256_prompts" in row:
            print(f"attribution {name}: {row['layers']} SAEs x {row['d_sae']} latents ({row['sae']}), "
                  f"{row['prompts']} prompts x {row['tokens']} tokens, batch {row['batch_size']}: "
                  f"{row['seconds_per_256_prompts']:.3f} s per 256 prompts")
        else:
            print(f"attribution {name}: {row}")
    for name, row in report["evaluation"].items():
        if "prompts_per_s" in row:
            print(f"evaluation {name}: {row['prompts']} prompts x {row['tokens']} tokens, batch "
                  f"{row['batch_size']}: {row['prompts_per_s']:.1f} prompts/s")
        else:
            print(f"evaluation {name}: {row}")
    estimate = report["estimates"]
    if "error" in estimate:
        print(f"estimates: {estimate['error']}")
        return
    recipe = estimate["recipe"]
    print(f"estimates from gemma-2-2b at batch {'x'.join(map(str, estimate['step_shape']))}, {recipe['seeds']} seeds, "
          f"epochs {recipe['epochs']}, batch size {recipe['batch_size']} ({recipe['source']}); assumptions:")
    for note in estimate["assumptions"]["notes"]:
        print(f"  - {note}")
    for sweep in ("gender_sweep", "all_17_tasks"):
        parts = ", ".join(f"{key.removesuffix('_gpu_hours')} {value:.3f}" for key, value in estimate[sweep].items()
                          if key != "total_gpu_hours")
        print(f"estimate {sweep}: {estimate[sweep]['total_gpu_hours']:.3f} GPU-hours ({parts})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON report")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (CPU by default), to test the script")
    parser.add_argument("--device", help="default: cuda when present (the CPU only with --smoke)")
    parser.add_argument("--seconds-budget", type=float, default=420.0,
                        help="wall-clock seconds for all timed loops together (model builds come on top)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.device is None and not torch.cuda.is_available() and not args.smoke:
        parser.exit(2, "gpu_scale.py: no CUDA device here. It measures the paper's shapes on a GPU; "
                       "--smoke runs tiny shapes on the CPU to test the script.\n")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    scale = SMOKE_SCALE if args.smoke else PAPER_SCALE
    paper = yaml.safe_load(PAPER_CONFIG.read_text())
    import transformers

    peak = peak_flops(device)
    rate = matmul_rate(device, scale.matmul_size)
    report: dict[str, Any] = {
        "meta": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__, "smoke": args.smoke,
            "precision": f"{paper['finetune']['precision']} ({paper['model']['dtype']} weights, no autocast)",
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "peak_bf16_tflops": None if peak is None else peak / 1e12,
            "matmul_size": scale.matmul_size, "matmul_bf16_tflops": rate / 1e12 if device.type == "cuda" else None,
            "matmul_bf16_gflops": rate / 1e9, "seconds_budget": args.seconds_budget,
            "flops": "FlopCounterMode on one unhooked step (forward, backward, optimizer)",
            "hooks": f"projection, {DIRECTIONS_PER_LAYER} random directions at every layer, mode project",
        },
        "models": {}, "training": {}, "attribution": {}, "evaluation": {},
    }
    loops = len(scale.models) * (len(scale.shapes) + 1) + 1
    budget = Budget(args.seconds_budget, loops)
    for name in scale.models:
        try:
            measure_model(name, scale, paper, report, budget, device, args.out)
        except Exception as err:  # building the model failed (out of memory, say): the other model still runs
            traceback.print_exc()
            report["models"][name] = {"error": f"{type(err).__name__}: {err}"}
        free(device)  # the model went with measure_model's frame
    try:
        report["estimates"] = estimates(report, paper, scale)
    except (KeyError, TypeError) as err:
        report["estimates"] = {"error": f"a measurement the estimates need is missing: {err!r}"}
    report["meta"]["wall_s"] = time.perf_counter() - started
    write_json(report, args.out)
    print_tables(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
