"""Tiny models and tokenizers for tests: built in seconds, never downloaded.

One byte-level BPE tokenizer and one randomly initialised Llama are written in three forms that
`caft.model.loading` can load — a ``save_pretrained`` directory, a GGUF file, and a hand-built Hugging
Face hub cache — all holding the same weights, so every route must give the same logits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from huggingface_hub import constants
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from caft.model.loading import ModelSpec, load_model

TINY_HUB_ID = "tiny-org/tiny-llama"
TINY_HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_SEED = 0

TINY_SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "<pad>",
    "eos_token": "<eos>",
    "bos_token": "<bos>",
    "unk_token": "<unk>",
}
"""Gemma's order (pad=0, eos=1, bos=2, unk=3), so off-by-one id bugs show up the same way."""

TINY_SINGLE_TOKENS = (" A", " B", "Answer", ":")
"""Strings the tasks rely on being one token each (the answer letters and the prompt's end)."""

TINY_CORPUS: tuple[str, ...] = (
    "Choose the option corresponding to the correct pronoun.\n"
    "Question: The doctor said _____ would call back.\nA) he\nB) her\nAnswer: A",
    "Choose the option corresponding to the correct pronoun.\n"
    "Question: The nurse told _____ to wait.\nA) him\nB) she\nAnswer: B",
    "Question: The dogs _____ fast. | I loved this movie.\n"
    "A. run, positive\nB. runs, negative\nAnswer: A",
    "Question: Messi plays _____ | She gave _____ the book.\n"
    "A. tennis, she\nB. soccer, her\nAnswer: B",
    "The quick brown fox jumps over the lazy dog.",
    "A model reads text one token at a time and predicts the next token.",
)

TINY_LLAMA_CONFIG: dict[str, object] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.3,
}
"""Grouped-query attention (4 query / 2 key-value heads) so the GGUF Q/K permutation is exercised;
large init so that a wrong permutation or a missing weight visibly changes the logits."""


def build_tiny_tokenizer(
    corpus: tuple[str, ...] = TINY_CORPUS, repeats: int = 20
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `corpus`: any text encodes, and GGUF can store it (gpt2 type).

    Adds BOS in front of every sequence, like Gemma.
    """
    specials = list(TINY_SPECIAL_TOKENS.values())
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus) * repeats, trainer)
    bos = TINY_SPECIAL_TOKENS["bos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, backend.token_to_id(bos))],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **TINY_SPECIAL_TOKENS)
    for text in TINY_SINGLE_TOKENS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"tiny tokenizer splits {text!r} into {ids}; extend TINY_CORPUS"
    return tokenizer


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerBase, seed: int = TINY_SEED, **overrides: object
) -> LlamaForCausalLM:
    """Random tiny Llama for `tokenizer`, seeded inside `fork_rng`: the global RNG is untouched."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **{**TINY_LLAMA_CONFIG, **overrides},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def _permute_for_gguf(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K permutation from convert_hf_to_gguf (LlamaTensorProcessor undoes it).

    `n_head` is the number of query heads for Q and of key-value heads for K.
    """
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_llama_gguf(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, path: Path
) -> Path:
    """Write a Llama and its byte-level BPE tokenizer as an F32 GGUF, as llama.cpp converts them."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    special_ids = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.NORMAL
            for i in range(len(tokens))
        ]
    )
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        module_name, suffix = hf_name.rsplit(".", 1)
        gguf_name = f"{names.get_name(module_name)}.{suffix}"
        weight = tensor.detach().to(torch.float32).numpy()
        if ".attn_q." in gguf_name:
            weight = _permute_for_gguf(weight, config.num_attention_heads)
        elif ".attn_k." in gguf_name:
            weight = _permute_for_gguf(weight, config.num_key_value_heads)
        writer.add_tensor(gguf_name, weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the tiny tokenizer (``tokenizer.json`` + ``tokenizer_config.json``)."""
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    """A fresh tiny tokenizer (tests may change it), left-padded as `load_tokenizer` sets it."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """``save_pretrained`` directory (safetensors) of the tiny Llama together with its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    path = tmp_path_factory.mktemp("tiny_model")
    build_tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """F32 GGUF (llama architecture, gpt2-type tokenizer) with the weights of `tiny_model_dir`."""
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return write_llama_gguf(
        model, tokenizer, tmp_path_factory.mktemp("tiny_gguf") / "tiny-llama-f32.gguf"
    )


@pytest.fixture(scope="session")
def tiny_hf_home(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An ``HF_HOME`` whose hub cache holds `tiny_model_dir` as `TINY_HUB_ID`@`TINY_HUB_COMMIT`."""
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / f"models--{TINY_HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / TINY_HUB_COMMIT
    snapshot.mkdir(parents=True)
    for file in tiny_model_dir.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(TINY_HUB_COMMIT)
    return home


def use_offline_hub(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Offline, with `home` as cache (huggingface_hub reads env at import: patch both)."""
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def offline_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`datasets` and the hub offline, with an empty Hugging Face home under `tmp_path`. Both libraries read
    the environment when first imported, so their constants are patched too: with the environment alone, a
    test after one that imported them tried the network (23 s of retries per test in the suite)."""
    import datasets

    home = tmp_path / "hf"
    use_offline_hub(monkeypatch, home)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    return home


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tiny_hf_home: Path) -> Path:
    """Offline, with `tiny_hf_home` as the hub cache."""
    use_offline_hub(monkeypatch, tiny_hf_home)
    return tiny_hf_home


@pytest.fixture
def tiny_model_spec(tiny_model_dir: Path) -> ModelSpec:
    return ModelSpec(name=str(tiny_model_dir))


@pytest.fixture
def tiny_model(tiny_model_spec: ModelSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh (model, tokenizer) pair through `load_model`, as the workflow's stages get them."""
    return load_model(tiny_model_spec)


# --- sparse autoencoders ----------------------------------------------------------------------------


SAE_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "standard": ("StandardSAE", {}),
    "topk": ("TopKSAE", {"k": 8}),
    "topk_rescaled": ("TopKSAE", {"k": 8, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("JumpReLUSAE", {}),
    "layer_norm": ("StandardSAE", {"normalize_activations": "layer_norm"}),
}


@pytest.fixture
def sae_factory(tmp_path: Path) -> Callable[..., Path]:
    """Save a seeded random sae-lens SAE of one of `SAE_CONFIGS` and return its folder."""

    def build(name: str, d_in: int = int(TINY_LLAMA_CONFIG["hidden_size"]), d_sae: int = 64, seed: int = 0) -> Path:
        import sae_lens

        class_name, extra = SAE_CONFIGS[name]
        cls = getattr(sae_lens, class_name)
        config = getattr(sae_lens, f"{class_name}Config")(d_in=d_in, d_sae=d_sae, **extra)
        sae = cls(config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in sae.named_parameters():
                if param_name == "threshold":
                    param.copy_(torch.rand(param.shape, generator=generator) * 0.5)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) / d_in**0.5)
        folder = tmp_path / f"sae_{name}_{d_in}_{seed}"
        sae.save_model(folder)
        return folder

    return build
