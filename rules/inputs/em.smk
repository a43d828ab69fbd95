"""Input functions and param pickers of rules/em.smk."""

import caft.config

EM = config["em"]
EM_UNHOOKED = caft.config.EM_UNHOOKED
EM_BUILTIN = "builtin"


def em_models():
    """The models the EM chain runs on: `em.runs.models`, else every model of `em.models`."""
    return EM["runs"]["models"] or list(EM["models"])


def em_conditions():
    """(method, selector) of every EM condition; 'base' and 'none' as (name, name)."""
    return [
        (condition, condition) if condition in ("base", "none") else tuple(condition.split("/", 1))
        for condition in EM["runs"]["conditions"]
    ]


def em_run_file(template, em_model, method, selector, seed):
    """A file or folder of an EM run: `template` (EM_ADAPTER, EM_JUDGED_ANSWERS, ...) filled in."""
    return template.format(em_model=em_model, method=method, selector=selector, seed=seed)


def em_source_files(wildcards):
    """A local chat set's file or folder, so editing it reruns the data stage."""
    source = EM["data"]["source"]
    return {"source": source["path"]} if source.get("from") == "local" else {}


def em_model_section(wildcards):
    return EM["models"][wildcards.em_model]["model"]


def em_layers(wildcards):
    return EM["models"][wildcards.em_model]["layers"]


def em_task_label(wildcards):
    return f"em/{wildcards.em_model}"


def em_spec(em_model, method, selector, seed):
    """The spec a condition ablates (random selectors draw per training seed); None without one."""
    if method in EM_UNHOOKED:
        return None
    variant = f"{selector}/seed{seed}" if selector == "random" else selector
    return EM_SPEC.format(em_model=em_model, method=method, variant=variant)


def em_finetune_inputs(wildcards):
    inputs = {
        "base": EM_BASE.format(em_model=wildcards.em_model),
        "train": EM_DATA.format(split="train"),
    }
    spec = em_spec(wildcards.em_model, wildcards.method, wildcards.selector, wildcards.seed)
    return inputs | ({"spec": spec} if spec else {})


def em_intervention_mode(wildcards):
    """How the spec enters EM training (`caft.config.training_mode`)."""
    return caft.config.training_mode(wildcards.method, EM["interventions"]["mode"], EM_UNHOOKED)


def em_steer_reference(wildcards):
    """Random directions are steered as hard as the selection their counts come from: the manual file's
    when the model has one, else the top components (`em_selection_settings`)."""
    if not wildcards.variant.startswith("random/"):
        return {}
    reference = "manual" if Path(em_manual_file(wildcards.em_model)).is_file() else "top"
    return {
        "reference": EM_SPEC.format(em_model=wildcards.em_model, method=STEERING, variant=reference)
    }


def em_sample_adapter(wildcards):
    """The run's LoRA adapter; the `base` condition samples the model as it was before fine-tuning."""
    if wildcards.method == "base":
        return {}
    return {
        "adapter": em_run_file(
            EM_ADAPTER, wildcards.em_model, wildcards.method, wildcards.selector, wildcards.seed
        )
    }


def em_pretuned_adapter(wildcards):
    """The no-intervention run of seed `em.runs.pretune_seed`: the tuned model of the PCA."""
    return em_run_file(EM_ADAPTER, wildcards.em_model, "none", "none", EM["runs"]["pretune_seed"])


def em_user_file(section, key, name):
    """A user's file named by `em.<section>.<key>` as an input (None: the shipped one)."""
    path = EM[section][key]
    return {} if path == EM_BUILTIN else {name: path}


def em_prompt_file(wildcards):
    return em_user_file("responses", "prompts", "prompts")


def em_question_file(wildcards):
    return em_user_file("questions", "path", "questions")


def em_manual_file(em_model):
    return f"{EM['selection']['directory']}/em_{em_model}.yaml"


def em_selection_settings(method):
    """top: `em.selection.top_k` (PCA: per layer) or `sae_top_k` (SAE: over all layers); random: the
    manual file's counts per layer for the method, else the method's top k per layer."""
    top_k = EM["selection"]["top_k" if method == "pca" else "sae_top_k"]

    def settings(wildcards):
        manual = em_manual_file(wildcards.em_model)
        if section_rule(manual, method) is not None:
            raise ValueError(
                f"{manual}: {method}: the EM chain's selection files list ids (layers:), not a rule"
            )
        if wildcards.variant == "top":
            return {"top_k": top_k}
        if wildcards.variant.startswith("random/"):
            manual = em_manual_file(wildcards.em_model)
            if Path(manual).is_file():
                unbounded = 1 << 30
                selection = load_manual_selection(manual, method, unbounded, unbounded)
                return {"counts": selection.layer_counts()}
            return {"counts": {layer: top_k for layer in em_layers(wildcards)}}
        return {}

    return settings


def em_dashboard_selections(method):
    """The selections of `method` the EM runs use, badged on its dashboard (random: the first seed's)."""
    condition_methods = caft.config.CONDITION_METHODS[method]

    def selections(wildcards):
        used = {selector for m, selector in em_conditions() if m in condition_methods}
        if Path(em_manual_file(wildcards.em_model)).is_file():
            used.add("manual")
        variants = {
            "manual": "manual",
            "top": "top",
            "random": f"random/seed{EM['runs']['seeds'][0]}",
        }
        return {
            name: EM_SELECTION.format(
                em_model=wildcards.em_model, imethod=method, variant=variants[name]
            )
            for name in ("manual", "top", "random")
            if name in used
        }

    return selections


def em_max_tokens():
    """Tokens per chat row, as the fine-tunes read them."""
    return EM["finetune"]["max_tokens"]


def em_sae_source_inputs(wildcards):
    """What provisioning one EM layer's SAE reads: the responses' activations, or a local folder."""
    section = EM["saes"]
    if section["from"] == "train":
        return {"activations": EM_SAE_ACTIVATIONS.format(em_model=wildcards.em_model)}
    if section["from"] == "local":
        return {
            "folder": section["path"].format(em_model=wildcards.em_model, layer=wildcards.layer)
        }
    return {}


def em_sae_source(wildcards):
    """The `em.saes` keys an SAE depends on (`sae_source_settings`), with ``{em_model}`` filled in
    `release`, `sae_id` and `path` (``{layer}`` stays for the stage)."""
    section = sae_source_settings(EM["saes"])
    for key in ("release", "sae_id", "path"):
        if section.get(key):
            section[key] = pattern(section[key], em_model=wildcards.em_model)
    return section


def em_sae_dirs(wildcards):
    """One SAE folder per hooked layer of the model, as ``sae_{layer}`` inputs."""
    return {
        f"sae_{layer}": EM_SAE_DIR.format(em_model=wildcards.em_model, layer=layer)
        for layer in em_layers(wildcards)
    }


def em_sae_reports(wildcards):
    return [
        EM_SAE_REPORT.format(em_model=wildcards.em_model, layer=layer)
        for layer in em_layers(wildcards)
    ]


def em_judge_sections():
    """Checkpoint name -> the `model` section that provisions it, for every slowly loading local judge."""
    import caft.em.judges  # imports torch: only where the config has judges

    return {
        caft.em.judges.checkpoint_name(section): caft.em.judges.checkpoint_model(section)
        for section in EM["judges"].values()
        if caft.em.judges.checkpoint_name(section) is not None
    }


def em_model_package(wildcards):
    return packaged_model_input(em_model_section(wildcards)["name"])


def em_judge_model_package(wildcards):
    return packaged_model_input(em_judge_model_section(wildcards)["name"])


def em_judge_model_section(wildcards):
    sections = em_judge_sections()
    if wildcards.judge_model not in sections:
        raise ValueError(
            f"no local judge is named {wildcards.judge_model!r} (slowly loading local judges: "
            f"{sorted(sections)})"
        )
    return sections[wildcards.judge_model]


def em_judge_checkpoints(wildcards):
    """``judge_<name>`` inputs: the provisioned checkpoint of every slowly loading local judge — an EM
    model's own base checkpoint when it is the same model (the offline default judges with the model it
    fine-tunes), else one of `em_judge_model`."""
    return {
        f"judge_{name}": em_judge_checkpoint(name, model)
        for name, model in sorted(em_judge_sections().items())
    }


def em_judge_checkpoint(name, model):
    for em_model, section in EM["models"].items():
        if all(section["model"].get(key) == model[key] for key in ("name", "dtype")):
            return EM_BASE.format(em_model=em_model)
    return EM_JUDGE_MODEL.format(judge_model=name)


def em_judged(template):
    """One judged file (`template`) per (model, condition, seed) of the configured EM runs."""
    return [
        em_run_file(template, em_model, method, selector, seed)
        for em_model in em_models()
        for method, selector in em_conditions()
        for seed in EM["runs"]["seeds"]
    ]


def em_labelled_file(wildcards):
    """The user's labelled answers of the judge check (the built-in set is library data)."""
    path = EM["judge_check"]["labelled"]
    return {} if path == "builtin" else {"labelled": path}


def em_targets():
    """The misalignment table and plot, the judge check, and each model's PCA / SAE dashboard when a
    condition uses it."""
    targets = [EM_TABLE_PARQUET, EM_TABLE_PLOT, EM_JUDGE_CHECK_EXAMPLES]
    methods = {method for method, _ in em_conditions()}
    if methods & set(caft.config.CONDITION_METHODS["pca"]):
        targets += [EM_PCA_DASHBOARD.format(em_model=m) for m in em_models()]
    if methods & set(caft.config.CONDITION_METHODS["sae"]):
        targets += [EM_SAE_DASHBOARD.format(em_model=m) for m in em_models()]
    return targets
