"""Automatic interpretation of PCA and SAE candidates: LLM explanations, simulation scores, relevance
to the task query, and the threshold selector built on them (DESIGN §1 steps 2–3)."""


rule explain:
    input:
        unpack(candidate_inputs),
        code=library_code("autointerp.py", "explanations.py", "llm.py"),
    output:
        "results/{task}/{imethod}/explanations.parquet",
    log:
        "results/logs/explain/{task}/{imethod}.log",
    benchmark:
        "results/benchmarks/explain/{task}/{imethod}.tsv"
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
        "../workflow/scripts/explain.py"


rule auto_select:
    input:
        explanations="results/{task}/{imethod}/explanations.parquet",
        code=library_code("autointerp.py", "selection.py"),
    output:
        "results/{task}/selections/{imethod}/auto.json",
    log:
        "results/logs/auto_select/{task}/{imethod}.log",
    benchmark:
        "results/benchmarks/auto_select/{task}/{imethod}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=config["selection"]["auto"],
    script:
        "../workflow/scripts/auto_select.py"
