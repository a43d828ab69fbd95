"""What the configuration implies: the tasks and their data, the conditions of the runs, and the targets."""

import yaml

import caft.config
from caft.ablation.selection import load_manual_selection, manual_rule, manual_section_digest
from caft.data.tasks import SPLITS

NO_INTERVENTION = caft.config.NO_INTERVENTION
SKYLINE = caft.config.SKYLINE
UNHOOKED = caft.config.UNHOOKED
SEEDED_SELECTORS = caft.config.SEEDED_SELECTORS
STEERING = caft.config.STEERING


def question_sources():
    return sorted({s for a, b, _ in config["mcmc"]["triples"] for s in (a, b)})


def mcmc_pairs():
    return sorted({caft.config.pair_id(a, b) for a, b, _ in config["mcmc"]["triples"]})


def datasets():
    """Everything with its own splits: frame tasks and MCMC pairs."""
    return list(config["frame_tasks"]) + mcmc_pairs()


MCMC_TASKS = {
    caft.config.task_id(a, b, intended): (a, b, intended)
    for a, b, _ in config["mcmc"]["triples"]
    for intended in (0, 1)
}
"""Both intended indices of every configured pair: they share the pair's data and no-intervention run."""

RUN_KEYS = datasets() + list(MCMC_TASKS)


def pair_sources(pair):
    """(a, b) of a configured pair id '{a}_{b}'."""
    return next(
        (a, b) for a, b, _ in config["mcmc"]["triples"] if caft.config.pair_id(a, b) == pair
    )


def task_dataset(task):
    """The data a task trains and evaluates on: a frame task's own, or its MCMC pair's."""
    if task in datasets():
        return task
    a, b, _ = MCMC_TASKS[task]
    return caft.config.pair_id(a, b)


def task_kind(wildcards):
    return "frames" if wildcards.task in config["frame_tasks"] else "mcmc"


def answer_of_task(wildcards):
    """The column holding the intended answer: D_OOD separates the two MCMC questions."""
    if wildcards.task in config["frame_tasks"]:
        return "target"
    return caft.config.MCMC_ANSWER_COLUMNS[MCMC_TASKS[wildcards.task][2]]


def training_key(task, method):
    """No-intervention runs do not depend on the intended index: both indices share one run."""
    return task_dataset(task) if method == NO_INTERVENTION else task


def run_file(task, method, selector, seed, name):
    """A file of the run that trains `task` under (method, selector, seed), shared by both intended indices
    when there is no intervention."""
    return run_path(training_key(task, method), method, selector, seed, name)


def pretuned_checkpoint(task):
    """The no-intervention run of seed `pca.pretune_seed`: PCA's tuned model, and the gradients of
    attribution and the residuals of the oracle when they use the pretuned model (reused, never retrained).
    """
    seed = config["pca"]["pretune_seed"]
    return run_file(task, NO_INTERVENTION, NO_INTERVENTION, seed, "model")


def split_condition(condition):
    """'method/selector' as a pair; the conditions without a selector ('none', 'skyline') as (name, name)."""
    if condition in UNHOOKED:
        return (condition, condition)
    method, _, selector = condition.partition("/")
    return (method, selector)


def conditions():
    return [split_condition(condition) for condition in config["runs"]["conditions"]]


def condition_methods(method):
    """The condition methods built on an interpretation method's candidates (SAE: projection and latent)."""
    return caft.config.CONDITION_METHODS.get(method, (method,))


def explained_methods():
    return config["explanations"]["methods"]


def manual_selection_file(task):
    return f"{config['selection']['directory']}/{task}.yaml"


def has_section(path, method):
    """Whether the selection file at `path` exists and has a section for `method`."""
    path = Path(path)
    return path.is_file() and method in (yaml.safe_load(path.read_text()) or {})


def section_rule(path, method):
    """The rule of a selection file's `method` section, or None (no file, no such section, or ids)."""
    return manual_rule(path, method) if has_section(path, method) else None


def sae_layers():
    return config["saes"].get("layers", [])


def sae_dirs(wildcards=None):
    return {f"sae_{layer}": sae_dir(layer) for layer in sae_layers()}


def center_input(wildcards):
    """The corpus mean residuals, when projections mean-ablate (`interventions.center`)."""
    return {"centers": RESIDUAL_MEANS} if config["interventions"]["center"] else {}


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
                    eval_path(task, method, selector, seed, evaluation, "metrics.parquet")
                    for evaluation in evaluations
                ]
    return paths


def interpreted_tasks(method):
    """The tasks whose candidates of `method` ("pca" or "sae") are computed, shown on a dashboard and
    explained: all of them when a condition uses the method or the method is explained."""
    used = any(m in condition_methods(method) for m, _ in conditions())
    return config["runs"]["tasks"] if used or method in explained_methods() else []


def all_targets():
    targets = [split_path(dataset, split) for dataset in datasets() for split in SPLITS]
    if config["runs"]["tasks"]:
        targets += [f"{OOD_TABLE}.parquet", f"{OOD_TABLE}.png"]
    for method in ("pca", "sae"):
        targets += [
            DASHBOARD.format(task=task, imethod=method) for task in interpreted_tasks(method)
        ]
    if config["em"]["runs"]["models"]:
        targets += em_targets()
    return targets


def survey_pairs():
    """The MCMC pairs the survey covers: those listed in `survey.pairs`, else every configured pair."""
    listed = config["survey"]["pairs"]
    return mcmc_pairs() if listed is None else sorted(listed)


def survey_frame_tasks():
    listed = config["survey"]["frame_tasks"]
    return list(config["frame_tasks"]) if listed is None else list(listed)


def survey_tasks():
    """Every surveyed frame task, and both intended indices of every surveyed pair."""
    pairs = [pair_sources(pair) for pair in survey_pairs()]
    return survey_frame_tasks() + [caft.config.task_id(a, b, i) for a, b in pairs for i in (0, 1)]


# Input functions and param pickers shared by the PCA and SAE selection and dashboard rules.


def manual_rule_of(task, method):
    """The rule of the task's selection file for `method`, or None (no file, or ids)."""
    return section_rule(manual_selection_file(task), method)


def manual_layer_counts(task, method):
    """Ids per layer in the task's manual file (ids, not a rule): the random baselines draw the same counts
    (random) or their total (random-pool). Read here (not as an input) so editing which ids are chosen, at
    equal counts, leaves random runs alone."""
    unbounded = 1 << 30
    selection = load_manual_selection(manual_selection_file(task), method, unbounded, unbounded)
    return selection.layer_counts()


def manual_section(method, file_of):
    """The person's selection file as a parameter of the manual selector: its path and the digest of the
    method's section. Not an input: the file holds both methods' sections, and an input reruns on any edit,
    so editing the PCA section would retrain the SAE manual runs."""

    def section(wildcards):
        if wildcards.variant != "manual":
            return None
        path = file_of(wildcards)
        return {"file": path, "sha256": manual_section_digest(path, method)}

    return section


def manual_input(method):
    """What a selector reads besides the candidates and the person's file (`manual_section`): the method's
    windows when the file holds a rule rather than ids, or, for the random baselines of a rule, the manual
    selection's artifact (a rule's counts are known only once it has been applied)."""
    windows = {"pca": PCA_WINDOWS, "sae": SAE_WINDOWS}[method]

    def inputs(wildcards):
        if wildcards.variant == "manual":
            is_rule = manual_rule_of(wildcards.task, method) is not None
            dataset = task_dataset(wildcards.task)
            return {"windows": windows.format(dataset=dataset)} if is_rule else {}
        if wildcards.variant.startswith(SEEDED_SELECTORS) and manual_rule_of(
            wildcards.task, method
        ):
            return {"manual_selection": selection_path(wildcards.task, method, "manual")}
        return {}

    return inputs


def selection_settings(method):
    """Only the selection keys a selector uses: top_k for top; for the random baselines of a file with
    ids, the manual counts per layer (random) or their total (random-pool), so moving an id to another
    layer leaves random-pool alone (a rule's random baselines read the manual artifact instead)."""
    top_k = {"pca": "top_k", "sae": "sae_top_k"}[method]

    def settings(wildcards):
        if wildcards.variant == "top":
            return {"top_k": config["selection"][top_k]}
        if not wildcards.variant.startswith(SEEDED_SELECTORS) or manual_rule_of(
            wildcards.task, method
        ):
            return {}
        counts = manual_layer_counts(wildcards.task, method)
        if wildcards.variant.startswith("random/"):
            return {"counts": counts}
        return {"count": sum(counts.values())}

    return settings


def dashboard_selections(task, method):
    """The selections a dashboard badges: those the configured runs use (random, random-pool: the first
    seed's) and the automatic one whenever the method is explained; the manual one only when a run uses it,
    so a rule that chooses nothing cannot keep unbuilt the page it is read from."""
    used = {selector for m, selector in conditions() if m in condition_methods(method)}
    if method in explained_methods():
        used.add("auto")
    variants = {"manual": "manual", "top": "top", "auto": "auto"} | {
        seeded: f"{seeded}/seed{config['runs']['seeds'][0]}" for seeded in SEEDED_SELECTORS
    }
    return {name: selection_path(task, method, v) for name, v in variants.items() if name in used}


def explanation_input(task, method):
    """A dashboard's explanations, when its method is explained."""
    if method not in explained_methods():
        return {}
    return {"explanations": EXPLANATIONS.format(task=task, imethod=method)}
