"""Answers of a fine-tuned model to the evaluation questions, sampled reproducibly.

Each plan row is one sample of one paraphrase of one question. The transformers backend samples in
left-padded batches, each seeded from (seed, batch index) inside a forked torch RNG, so one config gives
the same answers and the global RNG is untouched. The vLLM backend (GPU machines) loads a merged
checkpoint and seeds every row on its own. Answers are the generated text as decoded, unstripped, so a
prompt followed by its answer reads as the model produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import torch
from tqdm import tqdm

from caft.ablation.ablate import ablation_hooks
from caft.ablation.specs import InterventionSpec
from caft.config import SectionConfig
from caft.data.tasks import purpose_rng
from caft.finetune.engine import base_of
from caft.errors import ConfigError, DataError
from caft.model.chat import Message, chat_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PLAN_COLUMNS = ("question_id", "paraphrase_index", "sample_index", "prompt", "system")


@dataclass(frozen=True)
class SamplingConfig(SectionConfig):
    """How answers are sampled (an ``em.sampling`` section, or ``em.responses`` without its prompts; checked
    by config/schema.yaml, which holds the defaults: these are ``em.sampling``'s): temperature 0 is greedy;
    the paper uses temperature 1 and 600 new tokens."""

    SECTION: ClassVar[str] = "em.sampling"

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 16
    seed: int = 0
    backend: str = "transformers"


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    plan: pd.DataFrame,
    cfg: SamplingConfig,
    spec: InterventionSpec | None = None,
    mode: str = "project",
) -> pd.DataFrame:
    """The plan (one row per sample, in plan order) with ``answer`` and ``answer_tokens`` added.

    ``spec`` is ablated during generation only when given ("hooked" sampling); deployed models run without.
    """
    prompts = _prompt_ids(tokenizer, plan)
    stop = _stop_ids(base_of(model).generation_config.eos_token_id, tokenizer)
    device = next(model.parameters()).device
    answers: list[str] = []
    lengths: list[int] = []
    starts = range(0, len(prompts), cfg.batch_size)
    with ablation_hooks(base_of(model), spec, mode), torch.no_grad():
        for batch, start in enumerate(tqdm(starts, desc="sampling", mininterval=5)):
            input_ids, attention_mask = left_padded(prompts[start:start + cfg.batch_size], tokenizer.pad_token_id)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
                torch.manual_seed(_seed(cfg.seed, f"batch:{batch}"))
                output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                        **_generation_kwargs(cfg, tokenizer.pad_token_id, stop))
            for new in output[:, input_ids.shape[1]:].tolist():
                n = _answer_length(new, stop)
                answers.append(tokenizer.decode(new[:n], skip_special_tokens=True))
                lengths.append(n)
    return plan.reset_index(drop=True).assign(answer=answers, answer_tokens=lengths)


def sample_answers_vllm(merged_dir: Path, plan: pd.DataFrame, cfg: SamplingConfig) -> pd.DataFrame:
    """`sample_answers` with vLLM on a merged checkpoint; each row is seeded from (seed, row index)."""
    try:
        import vllm
    except ImportError as err:
        raise ConfigError("sampling.backend vllm needs the vllm package (GPU machines): pip install vllm") from err
    from transformers import GenerationConfig

    llm = vllm.LLM(model=str(merged_dir), seed=cfg.seed)
    tokenizer = llm.get_tokenizer()
    prompts = [{"prompt_token_ids": ids} for ids in _prompt_ids(tokenizer, plan)]
    params = [vllm.SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
                                  seed=_seed(cfg.seed, f"row:{i}")) for i in range(len(prompts))]
    try:
        eos = GenerationConfig.from_pretrained(merged_dir).eos_token_id
    except OSError:  # a checkpoint without generation_config.json
        eos = None
    stop = _stop_ids(eos, tokenizer)
    completions = [output.outputs[0] for output in llm.generate(prompts, params)]
    return plan.reset_index(drop=True).assign(
        answer=[c.text for c in completions],
        answer_tokens=[_answer_length(list(c.token_ids), stop) for c in completions])


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input ids and attention mask [batch, longest], padded on the left so every row ends at the last column."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts])
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
    return input_ids, mask


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, plan: pd.DataFrame) -> list[list[int]]:
    """Token ids of each row's chat prompt (optional system message, then the question)."""
    missing = set(PLAN_COLUMNS) - set(plan.columns)
    if missing:
        raise DataError(f"the sampling plan lacks column(s) {sorted(missing)}")
    prompts = []
    for row in plan.itertuples(index=False):
        messages: list[Message] = [{"role": "system", "content": row.system}] if isinstance(row.system, str) else []
        messages.append({"role": "user", "content": row.prompt})
        # a chat template writes its own BOS; the plain layout needs the tokenizer's
        encoded = tokenizer(chat_prompt(tokenizer, messages), add_special_tokens=not tokenizer.chat_template)
        prompts.append(list(encoded.input_ids))
    return prompts


def _generation_kwargs(cfg: SamplingConfig, pad_id: int, stop: set[int]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.temperature > 0,
                              "pad_token_id": pad_id, "eos_token_id": sorted(stop)}
    if cfg.temperature > 0:
        # top_k 0: transformers would otherwise fill in the model's or its own default top-k (50)
        kwargs |= {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0}
    return kwargs


def _stop_ids(eos: int | list[int] | None, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Token ids that end an answer: the generation config's EOS ids (e.g. an end-of-turn token) and the tokenizer's."""
    ids = {eos} if isinstance(eos, int) else set(eos or [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def _answer_length(new_tokens: list[int], stop: set[int]) -> int:
    """Tokens of the answer itself: those before the first stop token (padding follows it)."""
    return next((i for i, token in enumerate(new_tokens) if token in stop), len(new_tokens))


def _seed(seed: int, purpose: str) -> int:
    return int(purpose_rng(seed, f"sampling:{purpose}").integers(2**63))
