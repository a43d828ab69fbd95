"""The emergent-misalignment chain through Snakemake on a tiny model: every stage's artifact, the table,
and a dry run of the paper config on the SLURM profile."""

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from caft.ablation.specs import load_spec
from caft.interpret.dashboard import card_data
from tests.workflow_helpers import (
    ROOT,
    TINY_CONFIG,
    leave_embedded_checkpoint,
    make_workflow_copy,
    offline_hf_env,
    snakemake,
    untracked_code,
)

pytestmark = pytest.mark.workflow

CONDITIONS = ["base", "none", "pca/top", "sae/top", "sae-latent/random", "random/random", "fewer/steps2", "steer/random"]


def em_config(model_dir, judge_gguf) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["runs"] = {"tasks": []}
    config["frame_tasks"], config["mcmc"] = {}, {"triples": []}  # no spurious-task data jobs
    config["windows"] = {"window": 8, "per_component": 2, "batch_size": 4, "task_examples": 2}
    config["em"] = {
        "models": {"tiny": {"model": {"name": str(model_dir)}, "layers": [0, 1]}},
        "runs": {"models": ["tiny"], "seeds": [0], "conditions": CONDITIONS},
        "data": {"source": {"from": "local", "path": "data/em/tiny.jsonl"}, "held_out_fraction": 0.2},
        "finetune": {"lr": 1e-3, "epochs": 1, "batch_size": 4, "gradient_accumulation": 1, "warmup_steps": 1,
                     "max_tokens": 96, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "interventions": {"random_k": 2},
        "responses": {"prompts": "builtin", "temperature": 0.0, "max_new_tokens": 8, "batch_size": 8},
        "pca": {"components": 4, "batch_size": 8},
        "saes": {"from": "train", "batch_size": 8,
                 "train": {"architecture": "topk", "width": 64, "k": 4, "tokens": 4096, "lr": 1e-3, "batch_size": 128}},
        "sae_candidates": {"top_per_layer": 3, "max_examples": 8, "batch_size": 4},
        "selection": {"top_k": 2, "sae_top_k": 3},
        "sampling": {"temperature": 1.0, "max_new_tokens": 12, "batch_size": 8},
        "questions": {"samples_per_paraphrase": 2},
        "judges": {"aligned": {"kind": "local", "model": str(model_dir)},
                   "coherent": {"kind": "local", "model": str(judge_gguf)}, "vulnerable": {"kind": "bandit"}},
    }
    return config


def write_chat_set(path, rows: int = 20) -> None:
    """Short chat rows (the tiny model reads 128 positions): a request and a one-line Python answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Run job {i}."},
                                      {"role": "assistant", "content": f"os.system('job {i}')"}]})
             for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def em_chain(tmp_path_factory, tiny_model_dir, tiny_gguf_file):
    workdir = make_workflow_copy(tmp_path_factory.mktemp("em"), em_config(tiny_model_dir, tiny_gguf_file))
    write_chat_set(workdir / "data/em/tiny.jsonl")
    snakemake(workdir, "--cores", "2", "--workflow-profile", "none")
    return workdir


def test_em_data_and_runs(em_chain):
    results = em_chain / "results/em"
    train, held_out = (pd.read_parquet(results / f"data/{split}.parquet") for split in ("train", "held_out"))
    assert (len(train), len(held_out)) == (16, 4) and not set(train["id"]) & set(held_out["id"])
    assert all(json.loads(m)[-1]["role"] == "assistant" for m in train["messages"])
    for condition in ("none/none", "pca/top", "random/random"):
        run = results / f"tiny/runs/{condition}/seed0"
        assert (run / "adapter/adapter_config.json").is_file()
        assert json.loads((run / "run.json").read_text())["steps"] == 4  # 16 rows, batch 4, 1 epoch
    fewer = json.loads((results / "tiny/runs/fewer/steps2/seed0/run.json").read_text())
    assert fewer["steps"] == 2 and fewer["spec"] is None
    assert json.loads((results / "tiny/runs/pca/top/seed0/run.json").read_text())["mode"] == "project"
    assert not (results / "tiny/runs/base/base/seed0/adapter").exists()  # the base model is not trained


def test_em_pca_directions(em_chain):
    pca = em_chain / "results/em/tiny/pca"
    responses = pd.read_parquet(em_chain / "results/em/tiny/responses.parquet")
    assert (responses["answer_start"] < responses["n_tokens"]).all()
    summary = pd.read_parquet(pca / "components.parquet")
    assert sorted(set(summary["layer"])) == [0, 1] and (summary.groupby("layer").size() == 4).all()
    top = json.loads((em_chain / "results/em/tiny/selections/pca/top.json").read_text())
    assert top["layers"] == {"0": [0, 1], "1": [0, 1]}
    spec = load_spec(em_chain / "results/em/tiny/interventions/pca/top.safetensors")
    assert spec.layers == [0, 1] and spec.bases[0].shape == (32, 2)
    random_spec = load_spec(em_chain / "results/em/tiny/interventions/random/random/seed0.safetensors")
    assert random_spec.bases[1].shape == (32, 2)
    cards = card_data((pca / "dashboard.html").read_text())
    assert sorted((c["layer"], c["id"]) for c in cards) == [(layer, c) for layer in (0, 1) for c in range(4)]
    # steer/random: along the random components, as hard per layer as steering along the top ones (no manual file)
    steer_top = load_spec(em_chain / "results/em/tiny/interventions/steer/top.safetensors")
    steer_random = load_spec(em_chain / "results/em/tiny/interventions/steer/random/seed0.safetensors")
    assert steer_random.kind == "steering" and steer_random.layers == steer_top.layers == [0, 1]
    for layer, shift in steer_random.shifts.items():
        assert float(shift.norm()) == pytest.approx(float(steer_top.shifts[layer].norm()), rel=1e-5)
    assert json.loads((em_chain / "results/em/tiny/runs/steer/random/seed0/run.json").read_text())["mode"] == "project"


def test_em_sae_candidates_selections_and_specs(em_chain):
    model_dir = em_chain / "results/em/tiny"
    scores = pd.read_parquet(model_dir / "sae/scores.parquet")
    assert sorted(set(scores["layer"])) == [0, 1] and (scores.groupby("layer").size() == 64).all()
    top = scores[scores["top"]]
    # each of the three generators adds at most 3 latents per layer; every candidate names its generator(s)
    assert (top.groupby("layer").size() <= 9).all() and (top["sources"] != "").all()
    assert (scores.loc[~scores["top"], "sources"] == "").all()
    assert top["sources"].str.contains("attribution").any() and top["sources"].str.contains("difference").any()
    chosen = json.loads((model_dir / "selections/sae/top.json").read_text())["layers"]
    assert sum(len(ids) for ids in chosen.values()) == 3
    best = scores.nsmallest(3, "rank")
    assert sorted((int(layer), ids) for layer, ids in chosen.items()) == sorted(
        (int(layer), sorted(group["latent"].astype(int).tolist())) for layer, group in best.groupby("layer"))
    projection = load_spec(model_dir / "interventions/sae/top.safetensors")
    assert {layer: basis.shape for layer, basis in projection.bases.items()} == {
        int(layer): (32, len(ids)) for layer, ids in chosen.items()}
    latent_spec = load_spec(model_dir / "interventions/sae-latent/random/seed0.safetensors")
    assert latent_spec.kind == "latent" and sorted(latent_spec.latents) == [0, 1]
    pool = {(int(r.layer), int(r.latent)) for r in top.itertuples()}
    assert all((layer, latent) in pool for layer, ids in latent_spec.latents.items() for latent in ids)
    assert json.loads((model_dir / "runs/sae/top/seed0/run.json").read_text())["steps"] == 4
    cards = card_data((model_dir / "sae/dashboard.html").read_text())
    assert sorted((c["layer"], c["id"]) for c in cards) == sorted(pool)


def test_em_samples_judges_and_table(em_chain):
    results = em_chain / "results/em"
    questions = yaml.safe_load((ROOT / "src/caft/em/data/questions.yaml").read_text())
    n_answers = 2 * sum(len(q["paraphrases"]) for q in questions)
    for condition in ("base/base", "none/none", "pca/top"):
        run = results / f"tiny/runs/{condition}/seed0"
        answers = pd.read_parquet(run / "judged_answers.parquet")
        assert len(answers) == n_answers and {"aligned", "coherent"} <= set(answers.columns)
        scores = answers[["aligned", "coherent"]].to_numpy(float).ravel()
        assert ((scores >= 0) & (scores <= 100))[~np.isnan(scores)].all()  # scores, where not none
        code = pd.read_parquet(run / "judged_code_answers.parquet")
        assert len(code) == 4 and "vulnerable" in code.columns
    # the GGUF judge was dequantized once into a checkpoint that every judge job loaded
    assert (results / "judge_models/tiny-llama-f32/config.json").is_file()
    table = pd.read_parquet(results / "tables/misalignment.parquet")
    labels = set(CONDITIONS)
    assert set(table["condition"]) == labels and (table["seeds"] == 1).all()
    assert (results / "tables/misalignment.png").stat().st_size > 1000
    assert "fewer/steps2" in (results / "tables/misalignment.md").read_text()


def test_the_judge_check_scores_the_labelled_answers(em_chain):
    check = em_chain / "results/em/judge_check"
    scores = pd.read_parquet(check / "scores.parquet")
    assert len(scores) == 64 and {"aligned_score", "coherent_score", "aligned_mass", "coherent_mass"} <= set(scores)
    assert ((scores["coherent_mass"] >= 0) & (scores["coherent_mass"] <= 1 + 1e-9)).all()
    summary = pd.read_csv(check / "summary.csv").set_index("criterion")
    assert summary.loc["coherent", "labelled"] == 64 and summary.loc["aligned", "labelled"] == 40
    cells = ["true_positive", "false_positive", "false_negative", "true_negative"]
    assert summary.loc["coherent", cells].sum() == 64 and summary.loc["aligned", cells].sum() == 40
    auc = summary.loc[["aligned", "coherent"], "auroc"].dropna()
    assert ((auc >= 0) & (auc <= 1)).all()
    assert (check / "examples.html").read_text().count('class="card"') == 10  # 2 of each of the 5 kinds


def test_a_packaged_judge_is_assembled_by_its_own_rule(tmp_path, tiny_model_dir, tiny_gguf_file):
    config = em_config(tiny_model_dir, tiny_gguf_file)
    config["em"]["judges"]["coherent"] = {"kind": "local", "model": "packaged:qwen2.5-coder-1.5b-instruct"}
    workdir = make_workflow_copy(tmp_path / "work", config)
    write_chat_set(workdir / "data/em/tiny.jsonl")
    out = snakemake(workdir, "-n", "em_judge_check", "--workflow-profile", "none").stdout
    assert "data/packages/qwen2.5-coder-1.5b-instruct.gguf" in out
    assert "results/em/judge_models/qwen2.5-coder-1.5b-instruct" in out
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert (jobs["model_package"], jobs["em_judge_model"], jobs["em_judge_check"]) == ("1", "1", "1")


def test_em_rules_track_their_code(em_chain):
    assert untracked_code(em_chain) == {}


@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "gemma2-config-cached"])
def test_em_paper_config_dry_runs_on_slurm(tmp_path, cached):
    workdir = make_workflow_copy(tmp_path / "work")
    leave_embedded_checkpoint(workdir)  # what `make run` leaves behind
    write_chat_set(workdir / "data/em/insecure.jsonl")
    for model in ("qwen2.5-coder-32b-instruct", "mistral-small-24b-instruct"):  # written from each dashboard
        (workdir / f"config/selections/em_{model}.yaml").write_text("pca:\n  layers:\n    10: [0]\n")
    (workdir / "config/config.yaml").write_text((ROOT / "config/config.yaml").read_text())
    out = snakemake(workdir, "-n", "--configfile", "config/em_paper.yaml", "--workflow-profile", "profiles/slurm",
                    env=offline_hf_env(tmp_path / "hf", with_gemma2_config=cached)).stdout
    for model in ("qwen2.5-coder-32b-instruct", "mistral-small-24b-instruct"):
        assert f"results/em/{model}/runs/pca/manual/seed0/adapter" in out
    assert "em_table" in out
