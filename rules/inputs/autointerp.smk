"""Input functions and param pickers of rules/autointerp.smk."""


def candidate_inputs(wildcards):
    """What an explainer reads: the task's data's PCA or SAE windows, and for SAEs the attribution ranks."""
    dataset = task_dataset(wildcards.task)
    if wildcards.imethod == "sae":
        return {
            "windows": SAE_WINDOWS.format(dataset=dataset),
            "scores": SAE_SCORES.format(dataset=dataset),
        }
    return {"windows": PCA_WINDOWS.format(dataset=dataset)}


def explanation_settings(wildcards):
    keys = ("client", "max_windows", "simulate_windows", "max_tokens")
    keys += ("pca_components",) if wildcards.imethod == "pca" else ("sae_latents",)
    return {key: config["explanations"][key] for key in keys}


def task_query(wildcards):
    return config["explanations"]["queries"][wildcards.task]
