"""Input functions and param pickers of rules/finetune.smk."""


def condition_spec(task, method, selector, seed):
    """The intervention spec of a condition (random selectors draw per training seed); None without one."""
    if method in UNHOOKED:
        return None
    seeded = selector in SEEDED_SELECTORS
    return spec_file(task, method, f"{selector}/seed{seed}" if seeded else selector)


def intervention_inputs(method, selector, seed, task):
    """A condition's spec, and for latent ablation the SAE folders the spec names."""
    spec = condition_spec(task, method, selector, seed)
    if not spec:
        return {}
    return {"spec": spec} | (sae_dirs() if method == "sae-latent" else {})


def training_split(wildcards):
    """D_amb, except for the skyline, which trains on the decorrelated skyline split."""
    split = "skyline" if wildcards.method == SKYLINE else "train"
    return split_path(task_dataset(wildcards.task), split)


def training_answer(wildcards):
    """The column trained on: the skyline's intended answer (per index for MCMC), else D_amb's target."""
    return answer_of_task(wildcards) if wildcards.method == SKYLINE else "target"


def intervention_mode(wildcards):
    """How the spec enters training (`caft.config.training_mode`)."""
    return caft.config.training_mode(wildcards.method, config["interventions"]["mode"])


def finetune_inputs(wildcards):
    inputs = {"base": BASE_MODEL, "train": training_split(wildcards)}
    return inputs | intervention_inputs(
        wildcards.method, wildcards.selector, wildcards.seed, wildcards.task
    )


def finetune_settings(wildcards):
    """The `finetune` section as one run reads it: `epochs` of its task kind only (a frame task's run does
    not depend on the MCMC epochs), and no `keep_checkpoints` (whether a checkpoint is kept is decided
    here, by `checkpoint_output`, and changes no result)."""
    section = without(config["finetune"], "keep_checkpoints")
    kind = task_kind(wildcards)
    epochs = section.get("epochs", {})
    return section | ({"epochs": {kind: epochs[kind]}} if kind in epochs else {})


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
        "model": run_file(wildcards.task, method, selector, wildcards.seed, "model"),
        "val": split_path(dataset, "val"),
        "ood": split_path(dataset, "ood"),
    }
    return inputs | intervention_inputs(
        wildcards.method, wildcards.selector, wildcards.seed, wildcards.task
    )


def evaluation_modes(wildcards):
    if wildcards.evaluation == "test-only":
        return ["test-only"]
    return ["deployed"] if wildcards.method in UNHOOKED else ["deployed", "hooked"]
