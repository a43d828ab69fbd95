"""Answer sampling: seeded, greedy equals argmax by hand, padding-invariant, in plan order, hooks only when asked."""

import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch

from caft.ablation.specs import random_directions
from caft.em.sampling import SamplingConfig, sample_answers, sample_answers_vllm
from caft.em.sft import SftConfig
from caft.finetune.engine import prepare_model
from caft.errors import ConfigError, DataError
from caft.model.chat import chat_prompt
from tests.config_helpers import check_section

QUESTIONS = ("Which animal is the quick brown fox?", "Hello!", "What does a model read one token at a time?")


def plan(samples: int = 2) -> pd.DataFrame:
    rows = [{"question_id": f"q{q}", "paraphrase_index": 0, "sample_index": s, "prompt": text,
             "system": "Answer briefly." if q == 1 else None}
            for q, text in enumerate(QUESTIONS) for s in range(samples)]
    return pd.DataFrame(rows)


GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=8, batch_size=4)
SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=8, batch_size=4)


def test_same_seed_same_answers_other_seed_differs_global_rng_untouched(tiny_model):
    model, tokenizer = tiny_model
    rng_before = torch.get_rng_state()
    first, again = (sample_answers(model, tokenizer, plan(), SAMPLED) for _ in range(2))
    other = sample_answers(model, tokenizer, plan(), replace(SAMPLED, seed=1))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first["answer"].tolist() == again["answer"].tolist()
    assert first["answer"].tolist() != other["answer"].tolist()
    assert first["answer"].nunique() > 1  # samples of one question differ too


def test_greedy_equals_argmax_decoding_by_hand(tiny_model):
    model, tokenizer = tiny_model
    row = plan(1).iloc[[1]]
    answer = sample_answers(model, tokenizer, row, GREEDY).iloc[0]
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello!"}]
    text = chat_prompt(tokenizer, messages)
    ids = tokenizer(text).input_ids
    new = []
    with torch.no_grad():
        while len(new) < GREEDY.max_new_tokens:
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    assert answer["answer_tokens"] == len(new) > 0
    assert answer["answer"] == tokenizer.decode(new, skip_special_tokens=True)


def test_batch_size_does_not_change_greedy_answers(tiny_model):
    model, tokenizer = tiny_model
    one = sample_answers(model, tokenizer, plan(1), replace(GREEDY, batch_size=1))
    four = sample_answers(model, tokenizer, plan(1), GREEDY)
    lengths = {len(tokenizer(chat_prompt(tokenizer, [{"role": "user", "content": q}])).input_ids) for q in QUESTIONS}
    assert len(lengths) > 1  # the batch of four is padded
    assert one["answer"].tolist() == four["answer"].tolist()
    assert one["answer_tokens"].tolist() == four["answer_tokens"].tolist()


def test_one_row_per_plan_row_in_plan_order(tiny_model):
    model, tokenizer = tiny_model
    shuffled = plan(2).iloc[[5, 0, 3, 1, 4, 2]].set_index(pd.Index([10, 11, 12, 13, 14, 15]))
    out = sample_answers(model, tokenizer, shuffled, SAMPLED)
    assert list(out.columns) == [*shuffled.columns, "answer", "answer_tokens"]
    assert out[list(shuffled.columns)].equals(shuffled.reset_index(drop=True))
    assert out["answer_tokens"].between(0, 8).all()
    with pytest.raises(DataError, match="system"):
        sample_answers(model, tokenizer, shuffled.drop(columns="system"), SAMPLED)


def test_a_spec_applies_only_while_sampling_and_reaches_a_peft_model(tiny_model):
    model, tokenizer = tiny_model
    spec = random_directions(32, [0, 1], k=16, seed=0)
    plain = sample_answers(model, tokenizer, plan(1), GREEDY)["answer"].tolist()
    hooked = sample_answers(model, tokenizer, plan(1), GREEDY, spec=spec)["answer"].tolist()
    assert hooked != plain
    assert sample_answers(model, tokenizer, plan(1), GREEDY)["answer"].tolist() == plain
    wrapped = prepare_model(model, SftConfig(), seed=0).eval()  # fresh LoRA: B = 0, the same function
    assert sample_answers(wrapped, tokenizer, plan(1), GREEDY, spec=spec)["answer"].tolist() == hooked


def test_vllm_backend_without_vllm_is_a_clear_config_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ConfigError, match="needs the vllm package"):
        sample_answers_vllm(tmp_path, plan(), SamplingConfig(backend="vllm"))


def test_config_from_section():
    assert SamplingConfig.from_config({"max_new_tokens": 600, "backend": "vllm"}).max_new_tokens == 600
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['top_k'\]"):
        SamplingConfig.from_config({"top_k": 5})
    for key, value, message in [("backend", "llama.cpp", "is not one of"), ("top_p", 0, "less than or equal to"),
                                ("batch_size", 0, "less than the minimum")]:
        for section in ("em.sampling", "em.responses"):  # checked by the schema, naming the key
            with pytest.raises(ConfigError, match=rf"key '{section}.{key}': .*{message}"):
                check_section(f"{section}.{key}", value)
