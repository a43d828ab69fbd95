"""The base model's shape read without loading it, and the parse-time check of every layer index."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import gguf
import pytest

from caft.errors import ConfigError
from caft.model.shape import base_model_shape, check_layer_indices, config_shape, gguf_shape, source_shape
from tests.fixtures_models import TINY_HUB_ID
from tests.workflow_helpers import TINY_CONFIG, leave_embedded_checkpoint, make_workflow_copy, snakemake


def test_gguf_header_gives_what_the_gguf_reader_gives(tiny_gguf_file: Path) -> None:
    reader = gguf.GGUFReader(str(tiny_gguf_file))
    expected = (int(reader.fields["llama.block_count"].parts[-1][0]), int(reader.fields["llama.embedding_length"].parts[-1][0]))
    assert gguf_shape(tiny_gguf_file) == expected == (2, 32)


def test_not_a_gguf_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"nope" * 8)
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf_shape(tmp_path / "x.gguf")


def test_shape_from_each_source(tiny_model_dir: Path, tiny_gguf_file: Path, offline_hub: Path, tmp_path: Path) -> None:
    assert config_shape(tiny_model_dir / "config.json") == (2, 32)
    assert source_shape({"name": str(tiny_model_dir)}) == (2, 32)
    assert source_shape({"name": str(tiny_gguf_file)}) == (2, 32)
    assert source_shape({"name": TINY_HUB_ID}) == (2, 32)
    assert source_shape({"name": "nobody/not-cached"}) is None
    # an unreadable source gives no shape (no check)
    assert base_model_shape({"name": str(tmp_path / "missing")}, tmp_path) is None


def test_the_checkpoint_counts_only_when_made_from_the_configured_model(tmp_path: Path) -> None:
    leave_embedded_checkpoint(tmp_path)
    checkpoint = tmp_path / "results/models/base"
    assert base_model_shape({"name": "embedded", "revision": None}, checkpoint) == (18, 640)
    # another model's checkpoint (what `make run` leaves) says nothing of a hub model not cached
    assert base_model_shape({"name": "nobody/not-cached", "revision": None}, checkpoint) is None
    (checkpoint / "caft_provenance.json").write_text(json.dumps({"config": {"name": "nobody/not-cached",
                                                                            "revision": "abc"}}))
    assert base_model_shape({"name": "nobody/not-cached", "revision": "abc"}, checkpoint) == (18, 640)
    assert base_model_shape({"name": "nobody/not-cached", "revision": "def"}, checkpoint) is None
    (checkpoint / "caft_provenance.json").unlink()  # no provenance: not trusted either
    assert base_model_shape({"name": "nobody/not-cached"}, checkpoint) is None


def test_layer_indices_out_of_range_name_the_key() -> None:
    config = {"pca": {"layers": [0, -2]}, "interventions": {"layers": "all"}, "oracle": {"layers": [1]},
              "saes": {"layers": [0, 1]}}
    check_layer_indices(config, 2, "tiny")
    with pytest.raises(ConfigError, match=r"key 'saes.layers': layer\(s\) \[99\] out of range: the base model "
                                          r"\(tiny\) has 2 decoder layers \(valid indices 0..1\)"):
        check_layer_indices({**config, "saes": {"layers": [0, 99]}}, 2, "tiny")
    with pytest.raises(ConfigError, match=r"key 'saes.layers': layer\(s\) \[-1\]"):
        check_layer_indices({**config, "saes": {"layers": [-1]}}, 2, "tiny")
    with pytest.raises(ConfigError, match=r"key 'pca.layers': layer\(s\) \[-3, 2\] .* \(valid indices -2..1\)"):
        check_layer_indices({**config, "pca": {"layers": [-3, 2]}}, 2, "tiny")


@pytest.mark.workflow
def test_a_bad_layer_fails_the_dry_run_before_any_job(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = copy.deepcopy(TINY_CONFIG)
    config["model"] = {"name": str(tiny_model_dir)}
    config["saes"] = {"layers": [99]}
    workdir = make_workflow_copy(tmp_path, config)
    result = snakemake(workdir, "-n", "--cores", "1", "--workflow-profile", "none", check=False)
    assert result.returncode != 0
    assert "key 'saes.layers': layer(s) [99] out of range" in result.stdout + result.stderr


def test_the_first_job_that_loads_the_model_checks_the_deferred_layers(tiny_model_dir: Path, tmp_path: Path) -> None:
    from caft.stages.sae import sae_activations

    with pytest.raises(ConfigError, match=r"key 'saes.layers': layer\(s\) \[2\] out of range: .* has 2 decoder layers"):
        sae_activations(tiny_model_dir, tmp_path / "corpus.parquet", [0, 2], 4, tmp_path / "out.safetensors")
