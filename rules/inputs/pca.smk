"""Input functions and param pickers of rules/pca.smk."""


def pca_section(*keys):
    return config_keys("pca", *keys)


def pretuned_model(wildcards):
    return pretuned_checkpoint(wildcards.dataset)


def pca_summary(wildcards):
    return PCA_SUMMARY.format(dataset=task_dataset(wildcards.task))


def pca_components_path(wildcards):
    return PCA_COMPONENTS.format(dataset=task_dataset(wildcards.task))


def pca_moments_path(wildcards):
    return PCA_MOMENTS.format(dataset=task_dataset(wildcards.task))


def steer_reference(wildcards):
    """Random directions are steered as hard as the manual selection, layer by layer."""
    if wildcards.variant.startswith(SEEDED_SELECTORS):
        return {"reference": spec_file(wildcards.task, STEERING, "manual")}
    return {}


def pca_dashboard_inputs(wildcards):
    """Windows and components of the task's data, and each selector's list (random: the first seed's)."""
    dataset = task_dataset(wildcards.task)
    return (
        {
            "windows": PCA_WINDOWS.format(dataset=dataset),
            "profiles": PCA_PROFILES.format(dataset=dataset),
            "summary": PCA_SUMMARY.format(dataset=dataset),
        }
        | dashboard_selections(wildcards.task, "pca")
        | explanation_input(wildcards.task, "pca")
    )
