"""The base model's shape (decoder layers, hidden size) without loading it, so that the workflow can
check every configured layer index when it is parsed, before any expensive job runs.

Sources, cheapest first: the workflow's own checkpoint (``results/models/base/config.json``, only when its
provenance names the configured model), a local model directory's ``config.json``, a hub id's
``config.json`` in the local Hugging Face cache, or the key-value header of a GGUF file (the embedded
model included). The GGUF header is read directly: the
`gguf` package's reader parses every tensor and takes seconds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from caft.errors import CaftError, ConfigError

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, handle.read(size))[0]


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return handle.read(_read(handle, "Q")).decode("utf-8", errors="replace")
    if kind == _ARRAY:
        item_kind, count = _read(handle, "I"), _read(handle, "Q")
        if item_kind in _SCALARS:  # skip the bytes: arrays (the vocabulary) are never needed here
            handle.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
        else:
            for _ in range(count):
                _value(handle, item_kind)
        return None
    if kind not in _SCALARS:
        raise ValueError(f"unknown GGUF value type {kind}")
    return _read(handle, _SCALARS[kind])


def gguf_shape(path: Path) -> tuple[int, int]:
    """(block_count, embedding_length) from a GGUF file's metadata."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        _read(handle, "I")  # version
        _read(handle, "Q")  # tensor count
        fields: dict[str, Any] = {}
        for _ in range(_read(handle, "Q")):
            key = handle.read(_read(handle, "Q")).decode("utf-8")
            fields[key] = _value(handle, _read(handle, "I"))
            arch = fields.get("general.architecture")
            if arch and f"{arch}.block_count" in fields and f"{arch}.embedding_length" in fields:
                return int(fields[f"{arch}.block_count"]), int(fields[f"{arch}.embedding_length"])
    raise ValueError(f"{path}: no block_count / embedding_length in the GGUF metadata")


def config_shape(config_json: Path) -> tuple[int, int]:
    """(num_hidden_layers, hidden_size) of a Hugging Face config.json (text config of multimodal models)."""
    config = json.loads(config_json.read_text())
    config = config.get("text_config", config)
    return int(config["num_hidden_layers"]), int(config["hidden_size"])


def source_shape(model_section: dict[str, Any]) -> tuple[int, int] | None:
    """The configured model's shape from its source, or None when it cannot be known cheaply (a hub id
    not in the local cache yet)."""
    from caft.model.loading import ModelSpec, resolve_source

    spec = ModelSpec.from_config(model_section)
    source = resolve_source(spec.name)
    if source.kind in ("embedded", "gguf"):
        return gguf_shape(Path(source.gguf_file))
    if source.kind == "local":
        return config_shape(Path(source.path_or_id) / "config.json")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source.path_or_id, "config.json", revision=spec.revision)
    return config_shape(Path(cached)) if isinstance(cached, str) else None


def checkpoint_matches(model_section: dict[str, Any], checkpoint: Path) -> bool:
    """Whether the workflow's checkpoint was materialized from the configured model (name and revision in
    its provenance): a checkpoint left by another config (the embedded default, say) has another shape."""
    try:
        made_from = json.loads((checkpoint / "caft_provenance.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (made_from.get("name"), made_from.get("revision")) == (model_section.get("name"), model_section.get("revision"))


def base_model_shape(model_section: dict[str, Any], checkpoint: Path) -> tuple[int, int] | None:
    """The configured model's shape: from the workflow's checkpoint when it was made from that model, else
    from the configured source; None when neither can be read before the model is downloaded (a bad
    `model.name` is then reported by the `base_model` job, with its own message)."""
    if (checkpoint / "config.json").is_file() and checkpoint_matches(model_section, checkpoint):
        return config_shape(checkpoint / "config.json")
    try:
        return source_shape(model_section)
    except (CaftError, OSError, ValueError, KeyError):
        return None


LAYER_KEYS = {"pca.layers": True, "interventions.layers": True, "oracle.layers": True, "saes.layers": False}
"""Config keys holding decoder-layer indices, and whether negative indices (from the last layer) are allowed."""


def check_layer_indices(config: dict[str, Any], n_layers: int, model: str) -> None:
    """Every configured layer index must name a decoder layer of the base model; the message names the key."""
    for key in LAYER_KEYS:
        section, name = key.split(".")
        check_layer_key(key, config.get(section, {}).get(name), n_layers, model)


def check_layer_key(key: str, layers: str | list[int] | None, n_layers: int, model: str) -> None:
    """One config key's layer indices against the model's `n_layers` (at parse time, or in the first job
    that loads a model whose shape was not known then)."""
    if layers is None or layers == "all":
        return
    low = -n_layers if LAYER_KEYS[key] else 0
    bad = [layer for layer in layers if not low <= layer < n_layers]
    if bad:
        raise ConfigError(f"config: key '{key}': layer(s) {bad} out of range: the base model ({model}) has "
                          f"{n_layers} decoder layers (valid indices {low}..{n_layers - 1})")
