"""Input functions and helpers shared by the rule files (no rules here)."""

import json
from pathlib import Path

import yaml

import caft.config
from caft.sources import LOCAL_SUFFIXES
from caft.selection import load_manual_selection
from caft.tasks import SPLITS


def library_code(*names):
    """Package modules a rule's script imports: Snakemake does not track them by itself."""
    package = Path(workflow.basedir) / "src" / "caft"
    files = []
    for name in names:
        path = package / name
        files += sorted(str(p) for p in path.glob("*.py")) if path.is_dir() else [str(path)]
    return files


def read_json(path):
    return json.loads(Path(path).read_text())


def mem_per_attempt(mem_mb):
    """Memory that grows with each retry, so a job killed for memory is not resubmitted as is."""

    def mem(wildcards, attempt):
        return mem_mb * attempt

    return mem


def alternation(names):
    """A wildcard constraint matching exactly the configured names."""
    return "|".join(sorted(names)) or "(?!)"


def question_sources():
    return sorted({s for a, b, _ in config["mcmc"]["triples"] for s in (a, b)})


def mcmc_pairs():
    return sorted({caft.config.pair_id(a, b) for a, b, _ in config["mcmc"]["triples"]})


def all_task_splits():
    datasets = list(config["frame_tasks"]) + mcmc_pairs()
    return expand("results/data/{dataset}/{split}.parquet", dataset=datasets, split=SPLITS)


def split_outputs(prefix):
    return {split: f"{prefix}/{split}.parquet" for split in SPLITS}


def source_spec(wildcards):
    return config["sources"][wildcards.source]


def source_table_kind(wildcards):
    return SOURCE_TABLES[wildcards.source]


def local_source_files(wildcards):
    """The local file of a ``from: local`` source, so editing it reruns its table (none if missing)."""
    spec = config["sources"][wildcards.source]
    if spec["from"] != "local":
        return []
    stem = Path(spec["path"]) / spec.get("file", wildcards.source)
    return [str(p) for suffix in LOCAL_SUFFIXES if (p := stem.with_suffix(suffix)).is_file()]


def source_code(wildcards):
    """The modules that build this source: the generator's only for built-in sources."""
    builtin = ["builtin"] if config["sources"][wildcards.source]["from"] == "builtin" else []
    return library_code("sources.py", "artifacts.py", *builtin)


def frame_task_section(wildcards):
    return config["frame_tasks"][wildcards.frame_task]


def frame_task_source(wildcards):
    return f"results/data/sources/{config['frame_tasks'][wildcards.frame_task]['source']}.parquet"


def survey_pairs():
    """The MCMC pairs the survey covers: those listed in `survey.pairs`, else every configured pair."""
    listed = config["survey"]["pairs"]
    return mcmc_pairs() if listed is None else sorted(listed)


def survey_frame_tasks():
    listed = config["survey"]["frame_tasks"]
    return list(config["frame_tasks"]) if listed is None else list(listed)


def pair_sources(pair):
    """(a, b) of a configured pair id '{a}_{b}'."""
    return next(
        (a, b) for a, b, _ in config["mcmc"]["triples"] if caft.config.pair_id(a, b) == pair
    )


MCMC_TASKS = {
    caft.config.task_id(a, b, intended): (a, b, intended)
    for a, b, _ in config["mcmc"]["triples"]
    for intended in (0, 1)
}
"""Both intended indices of every configured pair: they share the pair's data and no-intervention run."""
NO_INTERVENTION = caft.config.NO_INTERVENTION
SKYLINE = caft.config.SKYLINE
UNHOOKED = caft.config.UNHOOKED


def task_kind(wildcards):
    return "frames" if wildcards.task in config["frame_tasks"] else "mcmc"


def task_dataset(task):
    """The data a task trains and evaluates on: a frame task's own, or its MCMC pair's."""
    if task in config["frame_tasks"] or task in mcmc_pairs():
        return task
    a, b, _ = MCMC_TASKS[task]
    return caft.config.pair_id(a, b)


def training_key(task, method):
    """No-intervention runs do not depend on the intended index: both indices share one run."""
    return task_dataset(task) if method == NO_INTERVENTION else task


def training_split(wildcards):
    """D_amb, except for the skyline, which trains on the decorrelated skyline split."""
    split = "skyline" if wildcards.method == SKYLINE else "train"
    return f"results/data/{task_dataset(wildcards.task)}/{split}.parquet"


def training_answer(wildcards):
    """The column trained on: the skyline's intended answer (per index for MCMC), else D_amb's target."""
    return answer_of_task(wildcards) if wildcards.method == SKYLINE else "target"


def intervention_mode(wildcards):
    """How the spec enters training; runs without a spec do not depend on it."""
    return "project" if wildcards.method in UNHOOKED else config["interventions"]["mode"]


def run_dir(task, method, selector, seed):
    return f"results/{training_key(task, method)}/runs/{method}/{selector}/seed{seed}"


def spec_path(task, method, selector, seed):
    """The intervention spec of a condition (random selectors draw per training seed)."""
    if method in UNHOOKED:
        return None
    variant = f"{selector}/seed{seed}" if selector == "random" else selector
    return f"results/{task}/interventions/{method}/{variant}.safetensors"


def pretuned_model(wildcards):
    """The no-intervention run that PCA compares with the base model (reused, never retrained)."""
    return f"{run_dir(wildcards.dataset, NO_INTERVENTION, NO_INTERVENTION, config['pca']['pretune_seed'])}/model"


def pca_dir(wildcards):
    return f"results/{task_dataset(wildcards.task)}/pca"


def config_keys(section, *keys):
    """Only the keys of a config section a rule uses, so changing another one does not rerun it."""
    return {key: config[section][key] for key in keys}


def pca_section(*keys):
    return config_keys("pca", *keys)


def manual_selection_file(task):
    return f"{config['selection']['directory']}/{task}.yaml"


def manual_layer_counts(task, method):
    """Ids per layer in the task's manual file: the random baseline draws the same counts. Read here
    (not as an input) so editing which ids are chosen, at equal counts, leaves random runs alone."""
    unbounded = 1 << 30
    selection = load_manual_selection(manual_selection_file(task), method, unbounded, unbounded)
    return selection.layer_counts()


def selection_settings(method):
    """Only the selection keys a selector uses: top_k for top, the manual counts for random."""
    top_k = {"pca": "top_k", "sae": "sae_top_k"}[method]

    def settings(wildcards):
        if wildcards.variant == "top":
            return {"top_k": config["selection"][top_k]}
        if wildcards.variant.startswith("random/"):
            return {"counts": manual_layer_counts(wildcards.task, method)}
        return {}

    return settings


def manual_input(wildcards):
    """The person's selection file, for the manual selector only."""
    return (
        {"manual": manual_selection_file(wildcards.task)} if wildcards.variant == "manual" else {}
    )


def selection_inputs(wildcards):
    """Inputs of a PCA selector: the component summary, plus the manual file for the manual selector."""
    return {"summary": f"{pca_dir(wildcards)}/components.parquet"} | manual_input(wildcards)


def pca_components_path(wildcards):
    return f"{pca_dir(wildcards)}/components.safetensors"


def dashboard_inputs(wildcards):
    """Windows and components of the task's data, and each selector's list (random: first seed)."""
    return (
        {
            "windows": f"{pca_dir(wildcards)}/windows.parquet",
            "summary": f"{pca_dir(wildcards)}/components.parquet",
            "code": library_code("dashboard.py", "interpretation.py"),
        }
        | dashboard_selections(wildcards.task, "pca")
        | explanation_input(wildcards.task, "pca")
    )


def sae_layers():
    return config["saes"].get("layers", [])


def sae_dir(layer):
    return f"results/saes/layer_{layer}"


def sae_dirs(wildcards=None):
    return {f"sae_{layer}": sae_dir(layer) for layer in sae_layers()}


def sae_reports():
    return [f"results/saes/reports/layer_{layer}.parquet" for layer in sae_layers()]


def sae_source_inputs(wildcards):
    """What provisioning one layer's SAE reads: corpus activations to train on, or a local folder."""
    section = config["saes"]
    if section["from"] == "train":
        return {"activations": "results/saes/activations.safetensors"}
    if section["from"] == "local":
        return {"folder": section["path"].format(layer=wildcards.layer)}
    return {}


def attribution_model(wildcards):
    """The model whose gradients rank the latents: the base model (paper) or the pretuned run."""
    if config["attribution"]["model"] == "pretuned":
        return f"{run_dir(wildcards.dataset, NO_INTERVENTION, NO_INTERVENTION, config['pca']['pretune_seed'])}/model"
    return "results/models/base"


def sae_scores_path(wildcards):
    return f"results/{task_dataset(wildcards.task)}/sae/scores.parquet"


def center_input(wildcards):
    """The corpus mean residuals, when projections mean-ablate (`interventions.center`)."""
    if not config["interventions"]["center"]:
        return {}
    return {"centers": "results/corpus/residual_means.safetensors"}


def sae_spec_inputs(wildcards):
    """The selection, plus the SAE folders: the projection reads their decoders, latent specs name them."""
    inputs = {"selection": f"results/{wildcards.task}/selections/sae/{wildcards.variant}.json"}
    centers = center_input(wildcards) if wildcards.sae_method == "sae" else {}
    return inputs | sae_dirs() | centers


def sae_dashboard_inputs(wildcards):
    dataset = task_dataset(wildcards.task)
    return (
        {
            "windows": f"results/{dataset}/sae/windows.parquet",
            "scores": f"results/{dataset}/sae/scores.parquet",
            "reports": sae_reports(),
            "code": library_code("dashboard.py", "sae_pipeline.py"),
        }
        | dashboard_selections(wildcards.task, "sae")
        | explanation_input(wildcards.task, "sae")
    )


def explained_methods():
    return config["explanations"]["methods"]


def candidate_inputs(wildcards):
    """What an explainer reads: the task's data's PCA or SAE windows, and for SAEs the attribution ranks."""
    folder = f"results/{task_dataset(wildcards.task)}/{wildcards.imethod}"
    scores = {"scores": f"{folder}/scores.parquet"} if wildcards.imethod == "sae" else {}
    return {"windows": f"{folder}/windows.parquet"} | scores


def explanation_settings(wildcards):
    keys = ("client", "max_windows", "simulate_windows", "max_tokens")
    keys += ("pca_components",) if wildcards.imethod == "pca" else ("sae_latents",)
    return {key: config["explanations"][key] for key in keys}


def task_query(wildcards):
    return config["explanations"]["queries"][wildcards.task]


def explanation_input(task, method):
    """A dashboard's explanations, when its method is explained."""
    if method not in explained_methods():
        return {}
    return {"explanations": f"results/{task}/{method}/explanations.parquet"}


def has_manual_selection(task, method):
    path = Path(manual_selection_file(task))
    return path.is_file() and method in (yaml.safe_load(path.read_text()) or {})


def condition_methods(method):
    """The condition methods built on an interpretation method's candidates (SAE: projection and latent)."""
    return caft.config.SAE_METHODS if method == "sae" else (method,)


def dashboard_selections(task, method):
    """The selections a dashboard badges: those the configured runs use (random: the first seed's), the
    person's manual one whenever the task's selection file has a section for the method, and the
    automatic one whenever the method is explained."""
    used = {selector for m, selector in conditions() if m in condition_methods(method)}
    if has_manual_selection(task, method):
        used.add("manual")
    if method in explained_methods():
        used.add("auto")
    selections = f"results/{task}/selections/{method}"
    paths = {
        "manual": f"{selections}/manual.json",
        "top": f"{selections}/top.json",
        "random": f"{selections}/random/seed{config['runs']['seeds'][0]}.json",
        "auto": f"{selections}/auto.json",
    }
    return {name: path for name, path in paths.items() if name in used}


def intervention_inputs(method, selector, seed, task):
    """A condition's spec, and for latent ablation the SAE folders the spec names."""
    spec = spec_path(task, method, selector, seed)
    if not spec:
        return {}
    return {"spec": spec} | (sae_dirs() if method == "sae-latent" else {})


def finetune_inputs(wildcards):
    inputs = {
        "base": "results/models/base",
        "train": training_split(wildcards),
        "code": library_code("training.py", "interventions.py", "lm.py", "pipeline.py"),
    }
    return inputs | intervention_inputs(
        wildcards.method, wildcards.selector, wildcards.seed, wildcards.task
    )


def checkpoint_output(path):
    """Checkpoints are ~1 GB for the default model: optionally deleted once evaluated."""
    keep = config["finetune"]["keep_checkpoints"]
    return directory(path) if keep else temp(directory(path))


def evaluate_inputs(wildcards):
    """'trained' scores the run's own checkpoint; 'test-only' the no-intervention one, ablated at test."""
    method = NO_INTERVENTION if wildcards.evaluation == "test-only" else wildcards.method
    selector = NO_INTERVENTION if wildcards.evaluation == "test-only" else wildcards.selector
    dataset = task_dataset(wildcards.task)
    inputs = {
        "model": f"{run_dir(wildcards.task, method, selector, wildcards.seed)}/model",
        "val": f"results/data/{dataset}/val.parquet",
        "ood": f"results/data/{dataset}/ood.parquet",
        "code": library_code("evaluation.py", "interventions.py", "lm.py", "pipeline.py"),
    }
    return inputs | intervention_inputs(
        wildcards.method, wildcards.selector, wildcards.seed, wildcards.task
    )


def evaluation_modes(wildcards):
    if wildcards.evaluation == "test-only":
        return ["test-only"]
    return ["deployed"] if wildcards.method in UNHOOKED else ["deployed", "hooked"]


def answer_of_task(wildcards):
    """The column holding the intended answer: D_OOD separates the two MCMC questions."""
    if wildcards.task in config["frame_tasks"]:
        return "target"
    return caft.config.MCMC_ANSWER_COLUMNS[MCMC_TASKS[wildcards.task][2]]


def split_condition(condition):
    """'method/selector' as a pair; the conditions without a selector ('none', 'skyline') as (name, name)."""
    if condition in UNHOOKED:
        return (condition, condition)
    method, _, selector = condition.partition("/")
    return (method, selector)


def conditions():
    return [split_condition(condition) for condition in config["runs"]["conditions"]]


def all_metrics():
    runs = config["runs"]
    paths = []
    for task in runs["tasks"]:
        for seed in runs["seeds"]:
            for method, selector in conditions():
                evaluations = ["trained"]
                if method not in UNHOOKED and runs["test_only"]:
                    evaluations.append("test-only")
                paths += [
                    f"results/{task}/eval/{method}/{selector}/seed{seed}/{evaluation}/metrics.parquet"
                    for evaluation in evaluations
                ]
    return paths


def interpreted_tasks(method):
    """The tasks whose candidates of `method` ("pca" or "sae") are computed, shown on a dashboard and
    explained: all of them when a condition uses the method or the method is explained."""
    used = any(m in condition_methods(method) for m, _ in conditions())
    return config["runs"]["tasks"] if used or method in explained_methods() else []


def all_targets():
    targets = all_task_splits()
    if config["runs"]["tasks"]:
        targets += ["results/tables/ood_accuracy.parquet", "results/tables/ood_accuracy.png"]
    targets += [f"results/{task}/pca/dashboard.html" for task in interpreted_tasks("pca")]
    targets += [f"results/{task}/sae/dashboard.html" for task in interpreted_tasks("sae")]
    return targets


def oracle_model(wildcards):
    """Whose residuals the oracle is fitted on: the base model, or the no-intervention run."""
    if config["oracle"]["model"] == "pretuned":
        return f"{run_dir(wildcards.task, NO_INTERVENTION, NO_INTERVENTION, config['pca']['pretune_seed'])}/model"
    return "results/models/base"


def oracle_answers(wildcards):
    """(intended, spurious) answer columns: the shortcut's letter is the other MCMC question's answer, or a
    frame task's `spurious` column."""
    if wildcards.task in config["frame_tasks"]:
        return {"intended": "target", "spurious": "spurious"}
    intended = MCMC_TASKS[wildcards.task][2]
    return {
        "intended": caft.config.MCMC_ANSWER_COLUMNS[intended],
        "spurious": caft.config.MCMC_ANSWER_COLUMNS[1 - intended],
    }


def survey_tasks():
    """Every surveyed frame task, and both intended indices of every surveyed pair."""
    pairs = [pair_sources(pair) for pair in survey_pairs()]
    return survey_frame_tasks() + [caft.config.task_id(a, b, i) for a, b in pairs for i in (0, 1)]


def survey_concepts():
    """task -> (intended concept, spurious concept), for the survey's table."""
    concepts = {task: ("pronoun case", "profession gender") for task in survey_frame_tasks()}
    for task in survey_tasks():
        if task in MCMC_TASKS:
            a, b, intended = MCMC_TASKS[task]
            concepts[task] = (a, b) if intended == 0 else (b, a)
    return concepts


def survey_metrics(methods):
    return [
        f"results/{task}/eval/{method}/{method}/seed{seed}/trained/metrics.parquet"
        for task in survey_tasks()
        for method in methods
        for seed in config["survey"]["seeds"]
    ]


def survey_inputs(wildcards):
    """No-intervention metrics of every surveyed task, skyline metrics of those passing the paper's filter
    (known only once the no-intervention runs are evaluated: `survey_filter` is a checkpoint)."""
    passing = read_json(checkpoints.survey_filter.get().output[0])["passing"]
    skylines = [path for path in survey_metrics([SKYLINE]) if path.split("/")[1] in passing]
    return {"none": survey_metrics([NO_INTERVENTION]), "skyline": skylines}


RUN_KEYS = list(config["frame_tasks"]) + list(MCMC_TASKS) + mcmc_pairs()


wildcard_constraints:
    source=alternation(config["sources"]),
    frame_task=alternation(config["frame_tasks"]),
    a=alternation(question_sources()),
    b=alternation(question_sources()),
    task=alternation(RUN_KEYS),
    method="[a-z][a-z-]*",
    selector="[a-z][a-z0-9-]*",
    seed="[0-9]+",
    evaluation="trained|test-only",
    dataset=alternation(list(config["frame_tasks"]) + mcmc_pairs()),
    variant="manual|top|auto|random/seed[0-9]+",
    eraser="mean-diff|leace",
    imethod="pca|sae",
    layer="[0-9]+",
    sae_method="sae|sae-latent",
