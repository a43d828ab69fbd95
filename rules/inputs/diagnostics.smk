"""Input functions and param pickers of rules/diagnostics.smk."""


def oracle_model(wildcards):
    """Whose residuals the oracle is fitted on: the base model, or the no-intervention run."""
    return (
        pretuned_checkpoint(wildcards.task)
        if config["oracle"]["model"] == "pretuned"
        else BASE_MODEL
    )


def oracle_split(split):
    return lambda wildcards: split_path(task_dataset(wildcards.task), split)


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


def survey_metrics(method):
    return [
        eval_path(task, method, method, seed, "trained", "metrics.parquet")
        for task in survey_tasks()
        for seed in config["survey"]["seeds"]
    ]


def survey_inputs(wildcards):
    """No-intervention metrics of every surveyed task, skyline metrics of those passing the paper's filter
    (known only once the no-intervention runs are evaluated: `survey_filter` is a checkpoint)."""
    passing = read_json(checkpoints.survey_filter.get().output[0])["passing"]
    skylines = [
        eval_path(task, SKYLINE, SKYLINE, seed, "trained", "metrics.parquet")
        for task in survey_tasks()
        if task in passing
        for seed in config["survey"]["seeds"]
    ]
    return {"none": survey_metrics(NO_INTERVENTION), "skyline": skylines}


def survey_concepts():
    """task -> (intended concept, spurious concept), for the survey's table."""
    concepts = {task: ("pronoun case", "profession gender") for task in survey_frame_tasks()}
    for task in survey_tasks():
        if task in MCMC_TASKS:
            a, b, intended = MCMC_TASKS[task]
            concepts[task] = (a, b) if intended == 0 else (b, a)
    return concepts
