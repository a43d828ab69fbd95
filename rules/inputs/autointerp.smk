"""Input functions and param pickers of rules/autointerp.smk."""

from caft.config import TOKEN_SUMMARY


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
    """The `explanations` keys of one method's explanations; `max_tokens` (the explainer's reply length)
    only for an LLM client: token summaries write no reply."""
    section = config["explanations"]
    keys = ("client", "max_windows", "simulate_windows")
    keys += ("pca_components",) if wildcards.imethod == "pca" else ("sae_latents",)
    if section["client"].get("client") != TOKEN_SUMMARY:
        keys += ("max_tokens",)
    return {key: section[key] for key in keys}


def task_query(wildcards):
    return config["explanations"]["queries"][wildcards.task]
