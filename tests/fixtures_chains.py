"""The tiny workflow chains that several test modules read: each is built once per session.

Every job of a chain is a fresh Python process (1.5–4 s of imports for milliseconds of tiny-model work),
so a chain costs about a minute and a half on 2 cores: the PCA and SAE modules share one chain (one data
stage, base model, corpus and no-intervention run) instead of building two.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.workflow_helpers import TINY_CONFIG, make_workflow_copy, snakemake

DIRECTIONS_MANUAL = ("pca:\n  layers:\n    0: [0, 2]\n    1: [1]\n  notes: tiny test selection\n"
                     "sae:\n  layers:\n    0: [1, 5]\n    1: [3]\n  notes: tiny SAE selection\n")
"""config/selections/gender.yaml of the directions chain: a manual selection for each method."""


def directions_config(model_dir: Path) -> dict:
    """Both direction methods on gender, seed 0: PCA of the fine-tuning differences (manual, top, random;
    steering along the manual and random selections at c = 2) and SAEs trained on the corpus (attribution, windows, explanations by the tiny model, manual, top,
    random, auto and latent ablation), every projection mean-ablated around the corpus means."""
    config = copy.deepcopy(TINY_CONFIG)
    config["model"] = {"name": str(model_dir)}
    config["mcmc"] = {"triples": []}  # gender only: no MCMC data jobs
    # test_only off: the fine-tune and diagnostics chains cover test-only evaluation (10 jobs fewer here)
    config["runs"] = {"tasks": ["gender"], "seeds": [0], "test_only": False,
                      "conditions": ["none", "pca/manual", "pca/top", "pca/random", "steer/manual", "steer/random",
                                     "sae/manual", "sae/top", "sae/random", "sae-latent/manual", "sae/auto"]}
    config["finetune"] = {"lr": 1e-3, "batch_size": 16, "epochs": {"frames": 1, "mcmc": 1}, "warmup_ratio": 0.1}
    config["corpus"] = {"sources": [{"from": "generated", "docs": 8, "new_tokens": 16, "batch_size": 4}],
                        "max_tokens_per_doc": 24}
    config["interventions"] = {"center": True, "steer": {"coefficient": 2.0}}
    config["pca"] = {"components": 4, "batch_size": 8}
    config["saes"] = {"from": "train", "layers": [0, 1], "batch_size": 4,
                      "train": {"width": 64, "k": 4, "tokens": 4096, "batch_size": 128, "lr": 1e-3}}
    config["attribution"] = {"batch_size": 16, "top_n": 40, "validate_top": 4, "validate_prompts": 20}
    config["windows"] = {"window": 8, "per_component": 2, "random_per_component": 1, "batch_size": 4}
    config["selection"] = {"top_k": 2, "sae_top_k": 3, "auto": {"min_relevance": -1.0, "max_per_layer": 2}}
    # the tiny random model as explainer: its explanations are noise, so every candidate passes relevance −1
    config["explanations"] = {"methods": ["sae"], "client": {"client": "local", "model": str(model_dir)},
                              "queries": {"gender": "gender, women, men"}, "max_windows": 2, "simulate_windows": 1,
                              "max_tokens": 8}
    return config


@pytest.fixture(scope="session")
def directions_chain(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A workflow copy that has run `directions_config` to the end (tests that edit it restore it)."""
    workdir = make_workflow_copy(tmp_path_factory.mktemp("directions"), directions_config(tiny_model_dir))
    (workdir / "config/selections").mkdir(exist_ok=True)
    (workdir / "config/selections/gender.yaml").write_text(DIRECTIONS_MANUAL)
    snakemake(workdir, "--cores", "2", "--workflow-profile", "none")
    return workdir
