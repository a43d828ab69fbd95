"""benchmarks/gpu_scale.py is run once, on a GPU a later session borrows: its smoke mode must work here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_scale():
    """The script as a module (registered first: its dataclasses look their module up while being built)."""
    spec = importlib.util.spec_from_file_location("gpu_scale", ROOT / "benchmarks" / "gpu_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_smoke_run_writes_every_section(gpu_scale, tmp_path):
    out = tmp_path / "gpu_scale.json"
    returned = gpu_scale.main(["--smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))
    assert {"meta", "models", "training", "attribution", "evaluation", "estimates"} <= set(report)
    meta = report["meta"]
    assert meta["device"] == "cpu" and meta["smoke"] and meta["peak_bf16_tflops"] is None
    assert meta["torch"] and meta["transformers"] and "bf16" in meta["precision"]

    names = {"gemma-2-2b", "gemma-3-270m"}
    assert set(report["models"]) == names and set(report["training"]) == names
    for rows in report["training"].values():
        for row in rows.values():
            assert row["step_s_none"] > 0 and row["step_s_hooked"] > 0 and row["hooks_enter_exit_s"] > 0
            assert row["hooked_ratio"] > 0 and row["tokens_per_s_none"] > 0
            assert row["flops_per_step_counted"] > 0 and row["flops_per_step_6nt"] > 0
            assert row["mfu_none"] is None and row["mfu_hooked_net"] is None  # no peak for a CPU
            assert row["rounds"] >= 1 and row["stopped_early"] is False

    attribution = report["attribution"]["gemma-2-2b"]
    assert attribution["seconds_per_256_prompts"] > 0 and attribution["layers"] == 2 and attribution["d_sae"] == 128
    for name in names:
        assert report["evaluation"][name]["prompts_per_s"] > 0

    estimates = report["estimates"]
    for sweep in ("gender_sweep", "all_17_tasks"):
        assert all(hours > 0 for hours in estimates[sweep].values()), estimates[sweep]
    assert estimates["all_17_tasks"]["total_gpu_hours"] > estimates["gender_sweep"]["total_gpu_hours"]
    assert estimates["recipe"]["seeds"] == 5 and estimates["assumptions"]["notes"]


def test_a_spent_budget_skips_sections_but_keeps_the_report(gpu_scale, tmp_path):
    out = tmp_path / "gpu_scale.json"
    report = gpu_scale.main(["--smoke", "--out", str(out), "--seconds-budget", "0"])
    assert report["training"]["gemma-2-2b"]["4x8"] == {"skipped": "the seconds budget was spent before this section"}
    assert "skipped" in report["attribution"]["gemma-2-2b"]
    assert "error" in report["estimates"]
    assert json.loads(out.read_text())["models"]["gemma-3-270m"]["parameters"] > 0


def test_fallback_sae_encodes_and_passes_checks_as_sae_lens_does(gpu_scale):
    """Where sae-lens is missing (the GPU image), attribution runs on `JumpReluSae`: same latents, same checks."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from caft.ablation.ablate import check_sae

    torch.manual_seed(0)
    ours = gpu_scale.JumpReluSae(16, 48, torch.device("cpu"))
    with torch.no_grad():
        for param in ours.parameters():
            param.copy_(torch.randn(param.shape) * 0.3)
    reference = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=48))
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(10, 16)
    expected = reference.encode(x)
    assert (expected > 0).any() and (expected == 0).any()
    torch.testing.assert_close(ours.encode(x), expected)
    check_sae(ours, "fallback")
