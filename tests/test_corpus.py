"""The corpus artifact: generated (tiny random model), local files and a Hugging Face dataset directory."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from caft.data.corpus import (
    GENERATION_PROMPTS,
    CorpusConfig,
    build_corpus,
    generate_corpus,
    load_text_corpus,
    tokenize_corpus,
)
from caft.errors import ConfigError, DataError

SMALL = {"from": "generated", "docs": 6, "new_tokens": 8, "batch_size": 4, "max_tokens_per_doc": 24}


def built(tiny_model, **overrides) -> pd.DataFrame:
    return build_corpus(CorpusConfig.from_config({**SMALL, **overrides}), lambda: tiny_model)


def check_rows(table: pd.DataFrame, tokenizer, max_tokens: int) -> None:
    assert list(table.columns) == ["doc", "text", "input_ids", "n_tokens", "source"]
    assert table["doc"].tolist() == list(range(len(table)))
    for ids, n in zip(table["input_ids"], table["n_tokens"]):
        assert ids[0] == tokenizer.bos_token_id
        assert n == len(ids) <= max_tokens
    assert table.attrs["bos_token_id"] == tokenizer.bos_token_id


def test_generated_corpus_is_deterministic_and_leaves_the_global_rng_alone(tiny_model):
    model, tokenizer = tiny_model
    state = torch.get_rng_state()
    first = built(tiny_model)
    assert torch.equal(torch.get_rng_state(), state)
    pd.testing.assert_frame_equal(first, built(tiny_model))
    assert not first["text"].equals(built(tiny_model, seed=1)["text"])
    assert len(first) == SMALL["docs"]
    check_rows(first, tokenizer, SMALL["max_tokens_per_doc"])
    for text, source in zip(first["text"], first["source"]):
        index = int(source.removeprefix("generated:"))
        assert text.startswith(GENERATION_PROMPTS[index])


def test_generation_settings_reach_generate_and_max_docs_caps(tiny_model, monkeypatch):
    model, tokenizer = tiny_model
    calls = []
    generate = model.generate

    def spy(**kwargs):
        output = generate(**kwargs)
        calls.append((kwargs, output.shape[1] - kwargs["input_ids"].shape[1]))
        return output

    monkeypatch.setattr(model, "generate", spy)
    cfg = CorpusConfig.from_config({**SMALL, "new_tokens": 3, "temperature": 0.7, "top_p": 0.5})
    generate_corpus(model, tokenizer, cfg)
    assert [kwargs["input_ids"].shape[0] for kwargs, _ in calls] == [4, 2]
    for kwargs, new in calls:
        assert new <= 3
        assert (kwargs["do_sample"], kwargs["temperature"], kwargs["top_p"]) == (True, 0.7, 0.5)
        assert kwargs["pad_token_id"] == tokenizer.pad_token_id
        assert (kwargs["attention_mask"][:, -1] == 1).all()  # left padding
    assert len(built(tiny_model, max_docs=2)) == 2


def test_prompts_are_many_and_distinct():
    assert len(GENERATION_PROMPTS) >= 60
    assert len(set(GENERATION_PROMPTS)) == len(GENERATION_PROMPTS)
    assert all(p == p.strip() and p for p in GENERATION_PROMPTS)


def test_local_txt_jsonl_parquet_with_truncation(tmp_path, tiny_model):
    _, tokenizer = tiny_model
    (tmp_path / "texts").mkdir()
    long = "The quick brown fox jumps over the lazy dog. " * 20
    (tmp_path / "texts" / "a.txt").write_text(f"First paragraph\nstill first.\n\n  \n{long}\n\n\nThird one.\n")
    (tmp_path / "texts" / "b.txt").write_text("Only one here.")
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i})
                                                   for i, t in enumerate(["json one", "", "json two"])))
    pd.DataFrame({"text": ["parquet doc"], "other": [1]}).to_parquet(tmp_path / "p.parquet")
    cfg = CorpusConfig.from_config({"from": "local", "paths": ["texts/*.txt", "rows.jsonl", "p.parquet"],
                                    "max_tokens_per_doc": 16})
    table = build_corpus(cfg, lambda: tiny_model, base_dir=tmp_path)
    assert table["text"].tolist() == ["First paragraph\nstill first.", long.strip(), "Third one.",
                                      "Only one here.", "json one", "json two", "parquet doc"]
    assert table["source"].tolist() == ["texts/a.txt"] * 3 + ["texts/b.txt", "rows.jsonl", "rows.jsonl", "p.parquet"]
    check_rows(table, tokenizer, 16)
    assert table["n_tokens"][1] == 16
    assert table["input_ids"][4] == tokenizer("json one").input_ids

    capped = build_corpus(CorpusConfig.from_config({"from": "local", "paths": "texts/*.txt", "max_docs": 2}),
                          lambda: tiny_model, base_dir=tmp_path)
    assert capped["text"].tolist() == ["First paragraph\nstill first.", long.strip()]


def test_huggingface_route_loads_a_local_dataset_directory(tmp_path, monkeypatch, tiny_model):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in ["hf one", "hf two"]))
    cfg = CorpusConfig.from_config({"from": "huggingface", "dataset": str(tmp_path / "ds"), "text_column": "body"})
    table = build_corpus(cfg, lambda: tiny_model)
    assert table["text"].tolist() == ["hf one", "hf two"]
    assert table["source"].tolist() == [f"huggingface:{tmp_path / 'ds'}:train"] * 2
    with pytest.raises(DataError, match=r"no column 'text'.*body"):
        load_text_corpus(CorpusConfig.from_config({"from": "huggingface", "dataset": str(tmp_path / "ds")}))


def test_tokenize_drops_empty_documents(tiny_tokenizer):
    texts = pd.DataFrame({"text": ["a b", "  ", None, "c"], "source": ["s"] * 4})
    table = tokenize_corpus(texts, tiny_tokenizer, 8)
    assert table["text"].tolist() == ["a b", "c"]
    assert table["doc"].tolist() == [0, 1]
    with pytest.raises(DataError, match="no non-empty documents"):
        tokenize_corpus(texts.iloc[1:3], tiny_tokenizer, 8)


def test_local_errors(tmp_path):
    def load(paths, **extra):
        return load_text_corpus(CorpusConfig.from_config({"from": "local", "paths": paths, **extra}), tmp_path)

    with pytest.raises(DataError, match=r"no file matches 'missing/\*\.txt'"):
        load(["missing/*.txt"])
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}))
    with pytest.raises(DataError, match=r"rows\.jsonl: no column 'text'"):
        load(["rows.jsonl"])
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="no non-empty documents"):
        load(["blank.txt"])
    (tmp_path / "data.csv").write_text("text\nx\n")
    with pytest.raises(DataError, match="unsupported corpus file type"):
        load(["data.csv"])


@pytest.mark.parametrize(("section", "message"), [
    ({"from": "generated", "colour": 1}, r"unknown key\(s\).*'colour'"),
    ({"from": "generated", "paths": ["a.txt"]}, r"\['paths'\] do not apply to from: generated"),
    ({"from": "web"}, "must be one of"),
    ({"from": "local"}, "needs 'paths'"),
    ({"from": "huggingface"}, "needs 'dataset'"),
    ({"docs": 0}, "corpus.docs must be a positive integer"),
    ({"max_tokens_per_doc": 1}, "at least 2"),
    ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
])
def test_config_errors(section, message):
    with pytest.raises(ConfigError, match=message):
        CorpusConfig.from_config(section)


def test_config_defaults():
    cfg = CorpusConfig.from_config({})
    assert (cfg.origin, cfg.docs, cfg.max_tokens_per_doc, cfg.seed, cfg.max_docs) == ("generated", 200, 128, 0, None)
