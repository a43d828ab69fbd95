"""Input functions and param pickers of rules/sae.smk."""

SAE_SOURCE_KEYS = {"train": ("train",), "pretrained": ("release", "sae_id"), "local": ("path",)}
"""The keys of an `saes` section each source reads (`caft.directions.saes.provision_sae`)."""


def sae_source_settings(section):
    """What an SAE is made from: `from` and its source's keys, not another source's (the `train` settings
    of a pretrained SAE) nor `layers` or `batch_size` (adding a layer must not remake the others; the
    batch only collects the activations)."""
    source = section["from"]
    keys = SAE_SOURCE_KEYS.get(source, ())
    return {"from": source} | {key: section[key] for key in keys if key in section}


def sae_source_inputs(wildcards):
    """What provisioning one layer's SAE reads: corpus activations to train on, or a local folder."""
    section = config["saes"]
    if section["from"] == "train":
        return {"activations": SAE_ACTIVATIONS}
    if section["from"] == "local":
        return {"folder": section["path"].format(layer=wildcards.layer)}
    return {}


def attribution_model(wildcards):
    """The model whose gradients rank the latents: the base model (paper) or the pretuned run."""
    if config["attribution"]["model"] == "pretuned":
        return pretuned_checkpoint(wildcards.dataset)
    return BASE_MODEL


def sae_scores_path(wildcards):
    return SAE_SCORES.format(dataset=task_dataset(wildcards.task))


def sae_spec_inputs(wildcards):
    """The selection, plus the SAE folders: the projection reads their decoders, latent specs name them."""
    inputs = {"selection": selection_path(wildcards.task, "sae", wildcards.variant)}
    centers = center_input(wildcards) if wildcards.sae_method == "sae" else {}
    return inputs | sae_dirs() | centers


def sae_dashboard_inputs(wildcards):
    dataset = task_dataset(wildcards.task)
    return (
        {
            "windows": SAE_WINDOWS.format(dataset=dataset),
            "profiles": SAE_PROFILES.format(dataset=dataset),
            "scores": SAE_SCORES.format(dataset=dataset),
            "reports": [SAE_REPORT.format(layer=layer) for layer in sae_layers()],
        }
        | dashboard_selections(wildcards.task, "sae")
        | explanation_input(wildcards.task, "sae")
    )
