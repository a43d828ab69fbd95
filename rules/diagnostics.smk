"""Why CAFT works or fails on a model and task: the oracle bound's directions (fitted with the labels
CAFT does not have), the paper's filter and the task survey (no intervention and skyline per task).
"""


include: "inputs/diagnostics.smk"


rule oracle_directions:
    input:
        model=oracle_model,
        train=oracle_split("train"),
        skyline=oracle_split("skyline"),
        code=library_code("oracle_directions"),
    output:
        pattern(SPEC, method="oracle", variant="{eraser}"),
    log:
        log_path("oracle_directions", "{task}/{eraser}"),
    benchmark:
        benchmark_path("oracle_directions", "{task}/{eraser}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=30,
        gpu=1,
    params:
        cfg=config["oracle"],
        answers=oracle_answers,
    script:
        script_of("oracle_directions")


checkpoint survey_filter:
    input:
        metrics=survey_metrics(NO_INTERVENTION),
        code=library_code("survey_filter"),
    output:
        f"{SURVEY_DIR}/paper_filter.json",
    log:
        log_path("survey_filter"),
    benchmark:
        benchmark_path("survey_filter")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        criteria=config_keys("survey", "max_none_ood", "min_none_val"),
        tasks=survey_tasks(),
    script:
        script_of("survey_filter")


rule survey:
    input:
        unpack(survey_inputs),
        code=library_code("survey"),
    output:
        parquet=report(
            f"{SURVEY_DIR}/survey.parquet",
            caption="../workflow/report/survey.rst",
            category="Task survey",
        ),
        csv=f"{SURVEY_DIR}/survey.csv",
        markdown=f"{SURVEY_DIR}/survey.md",
        plot=report(
            f"{SURVEY_DIR}/survey.png",
            caption="../workflow/report/survey.rst",
            category="Task survey",
        ),
        eligible=f"{SURVEY_DIR}/eligible.json",
    log:
        log_path("survey"),
    benchmark:
        benchmark_path("survey")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        concepts=survey_concepts(),
        criteria=config_keys(
            "survey", "max_none_ood", "min_none_val", "min_skyline_ood", "min_skyline_val"
        ),
    script:
        script_of("survey")
