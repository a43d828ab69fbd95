"""The config schema rejects bad keys and types with messages that name the key."""

import copy
import tomllib
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from caft.ablation.selection import manual_rule
from caft.config import check_config
from caft.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_pass(name):
    kinds = check_config(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA)
    assert kinds == {"gender": "frames", "verbs": "questions", "sentiment": "questions", "sports": "questions",
                     "pronouns": "questions"}


@pytest.mark.parametrize(("overlay", "task", "tokens", "manual_rows"), [
    ("gender.yaml", "gender", {"he", "she", "nurse"}, {"sae/manual", "pca/manual"}),
    # its PCA rule chooses nothing on the real corpus (docs/results.md), so the overlay runs only SAE rows
    ("sentiment_pronouns.yaml", "sentiment_pronouns_0", {"he", "she", "him", "them"}, {"sae/manual"}),
])
def test_task_overlays_pass_and_their_manual_selections_are_rules(overlay, task, tokens, manual_rows):
    """A task's overlay, merged onto the default the way `--configfile` does, is valid, and its manual rows
    of both methods read rules (ids would not carry over between machines)."""
    config = default_config()
    update_config(config, yaml.safe_load((ROOT / "config" / overlay).read_text()))
    check_config(config, SCHEMA)
    assert config["runs"]["tasks"] == [task] and config["explanations"]["queries"]["gender"]  # merged, not replaced
    assert {c for c in config["runs"]["conditions"] if c.endswith("/manual")} == manual_rows
    for method in ("pca", "sae"):
        rule = manual_rule(ROOT / "config" / "selections" / f"{task}.yaml", method)
        assert rule is not None and tokens <= set(rule.peak_tokens) and rule.min_windows == 5


@pytest.mark.parametrize("overlay", sorted(p.name for p in (ROOT / "config").glob("*.yaml")
                                             if p.name not in ("config.yaml", "schema.yaml")))
def test_every_overlay_validates_merged_onto_the_default(overlay):
    """As `--configfile` merges it: our checks, then Snakemake's validate(), which fills the defaults."""
    from snakemake.utils import validate

    config = default_config()
    update_config(config, yaml.safe_load((ROOT / "config" / overlay).read_text()))
    check_config(config, SCHEMA)
    validate(config, str(SCHEMA))


def test_the_default_config_is_every_schema_default_it_sets():
    """config/config.yaml's recommended values are the schema's defaults, except the keys that say which
    runs, data and tasks there are (a default of those would run or download more than asked), the EM
    SAEs' training (one schema with `saes.train`, smaller for SmolLM2's responses) and EM warmup steps
    (a filled-in default would clash with a `warmup_ratio`)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    choices = {"mcmc.triples", "runs.tasks", "runs.seeds", "runs.conditions", "runs.test_only", "corpus.sources",
               "explanations.methods", "em.runs.conditions"}
    shared = {"em.saes.train.width", "em.saes.train.k", "em.saes.train.tokens", "em.saes.train.batch_size"}
    differing = {path for path, default, value in schema_defaults_beside(schema, default_config())
                 if default != value}
    assert differing == choices | shared | {"em.finetune.warmup_steps"}


def schema_defaults_beside(schema: dict, config: dict, node: dict | None = None, path: str = ""):
    """(dotted key, schema default, config value) for every key of `config` whose schema has a default."""
    from caft.config_docs import resolve

    node = resolve(schema if node is None else node, schema)
    for key, value in config.items():
        child = node.get("properties", {}).get(key)
        if child is None and isinstance(node.get("additionalProperties"), dict):
            child = node["additionalProperties"]
        if child is None:
            continue
        child = resolve(child, schema)
        if "default" in child and child["default"] != {}:  # `{}`: a section's own defaults fill it
            yield f"{path}{key}", child["default"], value
        if isinstance(value, dict):
            yield from schema_defaults_beside(schema, value, child, f"{path}{key}.")


def test_paper_config_has_the_paper_recipe():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    assert paper["model"]["name"] == "google/gemma-2-2b"
    assert len(paper["mcmc"]["triples"]) == 16 and len({tuple(t) for t in paper["mcmc"]["triples"]}) == 16
    assert paper["runs"]["seeds"] == [0, 1, 2, 3, 4] and len(paper["runs"]["tasks"]) == 17
    assert paper["finetune"] == {
        "lr": 5.0e-6, "weight_decay": 0.01, "betas": [0.9, 0.95], "warmup_ratio": 0.5,
        "epochs": {"frames": 5, "mcmc": 4}, "batch_size": 16, "gradient_accumulation": 1, "max_grad_norm": None,
        "freeze_embeddings": False, "train_fraction": 1.0, "precision": "bf16", "lora": None,
        "keep_checkpoints": False,
    }


def mutated(path: list, value) -> dict:
    config = copy.deepcopy(default_config())
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["finetune", "lr"], "fast", r"key 'finetune.lr': 'fast' is not of type 'number'"),
        (["finetune", "learning_rate"], 1e-5, r"'learning_rate' was unexpected\) at key 'finetune'"),
        (["modle"], {}, r"'modle' was unexpected"),
        (["mcmc", "triples"], [["verbs", "sports", 2]], r"key 'mcmc.triples.0.2': 2 is not one of \[0, 1\]"),
        (["mcmc", "splits", "train_fraction"], 1.5, r"key 'mcmc.splits.train_fraction'"),
        (["sources", "sports"], {"from": "local"}, r"key 'sources.sports': 'path' is a required property"),
        (["sources", "sports"], {"from": "web"}, r"key 'sources.sports.from': 'web' is not one of"),
        (["model", "dtype"], "float8", r"key 'model.dtype'"),
        (["finetune", "precision"], "fp8", r"key 'finetune.precision'"),
        (["interventions", "layers"], "some", r"key 'interventions.layers'"),
        (["runs", "seeds"], [-1], r"key 'runs.seeds.0'"),
        (["saes", "layers"], "all", r"key 'saes.layers': 'all' is not of type 'array'"),
        (["saes", "train", "architecture"], "gated", r"key 'saes.train.architecture'"),
        (["attribution", "model"], "tuned", r"key 'attribution.model'"),
        # kind-keyed sections: a key of another kind, or a kind's missing key, names the kind
        (["sources", "verbs"], {"from": "builtin", "path": "x"},
         r"key 'sources.verbs': 'path' does not apply to from: builtin \(its keys: from, generator, rows, seed\)"),
        (["sources", "verbs"], {"from": "huggingface"}, r"key 'sources.verbs': 'dataset' is a required property "
                                                        r"\(from: huggingface\)"),
        (["sources", "verbs"], {"from": "builtin", "rows": "many"}, r"key 'sources.verbs.rows': 'many' is not of type"),
        (["corpus", "sources"], [{"from": "generated", "paths": ["a.txt"]}],
         r"key 'corpus.sources.0': 'paths' does not apply to from: generated"),
        (["corpus", "sources"], [{"from": "wikipedia"}, {"from": "web"}], r"key 'corpus.sources.1.from': 'web' is not one"),
        (["explanations", "client"], {"client": "local", "model": "x", "base_url": "http://x"},
         r"key 'explanations.client': 'base_url' does not apply to client: local"),
        (["explanations", "client"], {"client": "openai", "model": "m"},
         r"key 'explanations.client': 'base_url' is a required property \(client: openai\)"),
        (["em", "judges", "vulnerable"], {"kind": "bandit", "model": "x"},
         r"key 'em.judges.vulnerable': 'model' does not apply to kind: bandit"),
        (["em", "judges", "aligned"], {"model": "m"}, r"key 'em.judges.aligned': 'kind' is a required property"),
        (["em", "data", "source"], {"from": "local", "path": "x", "file": "y"},
         r"key 'em.data.source': 'file' does not apply to from: local"),
        (["saes", "train"], {"architecture": "jumprelu", "l1_coefficient": 1.0},
         r"key 'saes.train': 'l1_coefficient' does not apply to architecture: jumprelu"),
        # the EM sections are typed
        (["em", "finetune", "learning_rate"], 1.0, r"'learning_rate' was unexpected\) at key 'em.finetune'"),
        (["em", "finetune", "lora"], {"rank": 4}, r"'rank' was unexpected\) at key 'em.finetune.lora'"),
        (["em", "finetune", "precision"], "fp8", r"key 'em.finetune.precision'"),
        (["em", "sampling", "backend"], "llama.cpp", r"key 'em.sampling.backend'"),
        (["em", "sampling", "top_p"], 0, r"key 'em.sampling.top_p'"),
        (["em", "responses", "batch_size"], 0, r"key 'em.responses.batch_size'"),
        (["em", "runs", "conditions"], ["fewer/steps0"], r"key 'em.runs.conditions.0'"),
        # YAML's .nan and .inf pass a schema's bounds; no setting takes one
        (["selection", "auto", "min_relevance"], float("nan"), r"key 'selection.auto.min_relevance': nan is not a finite"),
    ],
)
def test_schema_errors_name_the_key(path, value, message):
    with pytest.raises(ConfigError, match=message):
        check_config(mutated(path, value), SCHEMA)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["mcmc", "triples"], [["verbs", "chess", 0]], r"mcmc.triples\[0\] names unknown source 'chess'"),
        (["mcmc", "triples"], [["verbs", "verbs", 0]], r"pairs source 'verbs' with itself"),
        (["frame_tasks", "gender", "source"], "gendre", r"frame_tasks.gender.source names unknown source 'gendre'"),
        (["mcmc", "triples"], [["gender", "verbs", 0]], r"source 'gender' is used both as a frame table"),
        (["runs", "tasks"], ["verbs_sports_2"], r"runs.tasks\[0\] 'verbs_sports_2' is neither"),
        (["runs", "conditions"], ["pca/psychic"], r"runs.conditions\[0\] 'pca/psychic' is unknown"),
        (["saes"], {"from": "pretrained", "layers": [3]}, r"saes.from is 'pretrained', so saes.release must be set"),
        (["saes"], {"from": "pretrained", "layers": [3], "release": "r", "sae_id": "layer_3/width_16k"},
         r"saes.sae_id 'layer_3/width_16k' needs a \{layer\} placeholder"),
        (["saes"], {"from": "local", "layers": [3]}, r"saes.from is 'local', so saes.path must be set"),
    ],
)
def test_reference_errors_name_the_key(path, value, message):
    with pytest.raises(ConfigError, match=message):
        check_config(mutated(path, value), SCHEMA)


def test_both_random_baselines_are_known_conditions():
    conditions = ["none", "pca/random", "pca/random-pool", "sae/random", "sae/random-pool", "sae-latent/random-pool"]
    config = mutated(["runs", "conditions"], conditions)
    config["saes"] = {"layers": [3]}
    check_config(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"runs.conditions\[0\] 'random/random-pool' is unknown"):
        check_config(mutated(["runs", "conditions"], ["random/random-pool"]), SCHEMA)


def test_sae_conditions_need_sae_layers():
    config = mutated(["runs", "conditions"], ["none", "sae/top"])
    config["saes"] = {}
    with pytest.raises(ConfigError, match=r"runs.conditions use SAE latents, so saes.layers must list the SAE layers"):
        check_config(config, SCHEMA)


def test_environment_yml_installs_exactly_the_pyproject_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_sections == [["-e .[test,slurm]"]]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"test", "slurm"} <= set(extras)
    assert not [d for d in env["dependencies"] if isinstance(d, str) and d not in ("pip",) and not d.startswith("python")]


def test_only_projections_train_under_the_configured_mode():
    """Steering and runs without a spec get "project" whatever is configured, so changing the mode
    reruns neither; the EM half passes its own spec-less conditions."""
    from caft.config import EM_UNHOOKED, training_mode

    assert training_mode("pca", "activation") == "activation"
    assert [training_mode(m, "activation") for m in ("none", "skyline", "steer")] == ["project"] * 3
    assert training_mode("fewer", "activation", EM_UNHOOKED) == "project"
    assert training_mode("skyline", "activation", EM_UNHOOKED) == "activation"
