"""Input functions and param pickers of rules/pca.smk."""


def pca_section(*keys):
    return config_keys("pca", *keys)


def pretuned_model(wildcards):
    return pretuned_checkpoint(wildcards.dataset)


def pca_summary(wildcards):
    return PCA_SUMMARY.format(dataset=task_dataset(wildcards.task))


def manual_input(wildcards):
    """The person's selection file, for the manual selector only."""
    if wildcards.variant != "manual":
        return {}
    return {"manual": manual_selection_file(wildcards.task)}


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


def pca_components_path(wildcards):
    return PCA_COMPONENTS.format(dataset=task_dataset(wildcards.task))


def dashboard_selections(task, method):
    """The selections a dashboard badges: those the configured runs use (random: the first seed's), the
    person's manual one whenever the task's selection file has a section for the method, and the
    automatic one whenever the method is explained."""
    used = {selector for m, selector in conditions() if m in condition_methods(method)}
    if has_manual_selection(task, method):
        used.add("manual")
    if method in explained_methods():
        used.add("auto")
    variants = {
        "manual": "manual",
        "top": "top",
        "random": f"random/seed{config['runs']['seeds'][0]}",
        "auto": "auto",
    }
    return {name: selection_path(task, method, v) for name, v in variants.items() if name in used}


def explanation_input(task, method):
    """A dashboard's explanations, when its method is explained."""
    if method not in explained_methods():
        return {}
    return {"explanations": EXPLANATIONS.format(task=task, imethod=method)}


def pca_dashboard_inputs(wildcards):
    """Windows and components of the task's data, and each selector's list (random: the first seed's)."""
    dataset = task_dataset(wildcards.task)
    return (
        {
            "windows": PCA_WINDOWS.format(dataset=dataset),
            "summary": PCA_SUMMARY.format(dataset=dataset),
        }
        | dashboard_selections(wildcards.task, "pca")
        | explanation_input(wildcards.task, "pca")
    )
