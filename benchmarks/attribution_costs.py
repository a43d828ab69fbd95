"""Cost of SAE attribution patching, next to one plain forward+backward pass and to exact ablation of
the same latents, plus SAE training throughput.

Usage (after `make run` has built the base model, the gender splits and the SAEs):

    .venv/bin/python benchmarks/attribution_costs.py [--examples 256] [--exact 10] [--threads 2]

Interleaved, median of `--repeats`:
- plain: forward + backward of Σm (m = logit(correct) − logit(other) at the last position) from the
  input embeddings, no hooks, no SAEs — the floor any gradient-based attribution pays;
- attribution: `attribution_scores` over the same prompts with every configured SAE;
- exact: `exact_effects` for the top `--exact` latents (one forward per latent per batch).
Then `train_sae` on the first SAE layer's corpus activations (tokens/s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from caft.artifacts import load_tensors
from caft.directions.attribution import attribution_scores, exact_effects, rank_scores
from caft.directions.sae_folders import load_local_sae
from caft.directions.saes import ACTIVATIONS_FORMAT, SaeTrainConfig, train_sae
from caft.model.loading import ModelSpec, load_model
from caft.model.prompts import encode_prompts, task_answers

BASE = Path("results/models/base")
TRAIN = Path("results/data/gender/train.parquet")
SAES = Path("results/saes")


def plain_forward_backward(model, tokenizer, prompts, correct, other, batch_size: int) -> None:
    model.requires_grad_(False)
    embed = model.get_input_embeddings()
    for first in range(0, len(prompts), batch_size):
        batch = encode_prompts(tokenizer, prompts[first:first + batch_size])
        embeds = embed(batch["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], logits_to_keep=1,
                       use_cache=False).logits[:, -1].float()
        rows = torch.arange(len(logits))
        metric = logits[rows, correct[first:first + batch_size]] - logits[rows, other[first:first + batch_size]]
        torch.autograd.grad(metric.sum(), embeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--exact", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sae-tokens", type=int, default=102_400)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(ModelSpec(name=str(BASE)))
    saes = {int(p.name.removeprefix("layer_")): load_local_sae(p) for p in sorted(SAES.glob("layer_*"))}
    table = pd.read_parquet(TRAIN).iloc[: args.examples]
    correct, other = task_answers(table, tokenizer, str(TRAIN))
    prompts = table["prompt"].tolist()
    scores = rank_scores(attribution_scores(model, tokenizer, prompts, correct, other, saes, args.batch_size))
    top = scores.nsmallest(args.exact, "rank")
    latents = list(zip(top["layer"].astype(int), top["latent"].astype(int)))
    correct_t, other_t = torch.tensor(correct), torch.tensor(other)

    runs = {
        "plain": lambda: plain_forward_backward(model, tokenizer, prompts, correct_t, other_t, args.batch_size),
        "attribution": lambda: attribution_scores(model, tokenizer, prompts, correct, other, saes, args.batch_size),
        "exact": lambda: exact_effects(model, tokenizer, prompts, correct, other, saes, latents, args.batch_size),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{len(prompts)} prompts, SAEs at layers {sorted(saes)} (widths {[s.cfg.d_sae for s in saes.values()]}), "
          f"{args.threads} threads, median of {args.repeats}")
    for name, seconds in median.items():
        print(f"  {name:12s} {seconds:7.2f} s")
    print(f"  attribution / plain forward+backward: {median['attribution'] / median['plain']:.2f}x")
    print(f"  exact ablation of {len(latents)} latents / attribution of all {sum(s.cfg.d_sae for s in saes.values())}:"
          f" {median['exact'] / median['attribution']:.2f}x")

    tensors, _ = load_tensors(SAES.parent / "saes" / "activations.safetensors", ACTIVATIONS_FORMAT)
    layer = min(saes)
    activations = tensors[f"layer_{layer}"].float()
    width = saes[layer].cfg.d_sae
    cfg = SaeTrainConfig(width=width, k=16, tokens=args.sae_tokens, batch_size=1024, holdout_fraction=0.1)
    _, report = train_sae(activations, cfg, hook_name=f"model.layers.{layer}", model_name=str(BASE))
    print(f"SAE training (topk, width {width}, k 16, d_in {activations.shape[1]}): {report['tokens']} tokens in "
          f"{report['seconds']:.1f} s = {report['tokens_per_second']:.0f} tokens/s; FVU {report['fvu']:.3f}")


if __name__ == "__main__":
    main()
