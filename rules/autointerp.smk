"""Automatic interpretation of PCA and SAE candidates: explanations, simulation scores, relevance to the
task query, and the threshold selector built on them."""


include: "inputs/autointerp.smk"


rule explain:
    input:
        unpack(candidate_inputs),
        code=library_code("explain"),
    output:
        EXPLANATIONS,
    log:
        log_path("explain", "{task}/{imethod}"),
    benchmark:
        benchmark_path("explain", "{task}/{imethod}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
    params:
        cfg=explanation_settings,
        query=task_query,
    script:
        script_of("explain")


rule auto_select:
    input:
        explanations=rules.explain.output[0],
        code=library_code("auto_select"),
    output:
        pattern(SELECTION, variant="auto"),
    log:
        log_path("auto_select", "{task}/{imethod}"),
    benchmark:
        benchmark_path("auto_select", "{task}/{imethod}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=config["selection"]["auto"],
    script:
        script_of("auto_select")
