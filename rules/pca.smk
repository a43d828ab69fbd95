"""PCA directions: corpus, activation-difference moments, components, windows, selections, specs,
dashboards (DESIGN §1 steps 1–3)."""


rule corpus:
    input:
        base="results/models/base",
        code=library_code("corpus.py", "interpretation.py"),
    output:
        "results/corpus/corpus.parquet",
    log:
        "results/logs/corpus/corpus.log",
    benchmark:
        "results/benchmarks/corpus/corpus.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
    params:
        cfg=config["corpus"],
    script:
        "../workflow/scripts/corpus.py"


rule pca_moments:
    input:
        base="results/models/base",
        tuned=pretuned_model,
        train="results/data/{dataset}/train.parquet",
        code=library_code("activations.py", "interpretation.py"),
    output:
        "results/{dataset}/pca/moments.safetensors",
    log:
        "results/logs/pca_moments/{dataset}.log",
    benchmark:
        "results/benchmarks/pca_moments/{dataset}.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,
    params:
        cfg=pca_section("layers", "include_bos", "batch_size", "pretune_seed"),
    script:
        "../workflow/scripts/pca_moments.py"


rule pca_components:
    input:
        moments="results/{dataset}/pca/moments.safetensors",
        code=library_code("pca.py", "interpretation.py"),
    output:
        components="results/{dataset}/pca/components.safetensors",
        summary="results/{dataset}/pca/components.parquet",
    log:
        "results/logs/pca_components/{dataset}.log",
    benchmark:
        "results/benchmarks/pca_components/{dataset}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    params:
        cfg=pca_section("components"),
    script:
        "../workflow/scripts/pca_components.py"


rule pca_windows:
    input:
        base="results/models/base",
        corpus="results/corpus/corpus.parquet",
        components="results/{dataset}/pca/components.safetensors",
        code=library_code("windows.py", "interpretation.py"),
    output:
        "results/{dataset}/pca/windows.parquet",
    log:
        "results/logs/pca_windows/{dataset}.log",
    benchmark:
        "results/benchmarks/pca_windows/{dataset}.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,
    params:
        cfg=config["windows"],
    script:
        "../workflow/scripts/pca_windows.py"


rule select_pca:
    input:
        unpack(selection_inputs),
        code=library_code("selection.py", "interpretation.py"),
    output:
        "results/{task}/selections/pca/{variant,manual|top|random/seed[0-9]+}.json",
    log:
        "results/logs/select_pca/{task}/{variant}.log",
    benchmark:
        "results/benchmarks/select_pca/{task}/{variant}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=selection_settings("pca"),
    script:
        "../workflow/scripts/select.py"


rule pca_spec:
    input:
        unpack(center_input),
        selection="results/{task}/selections/pca/{variant}.json",
        components=pca_components_path,
        code=library_code("selection.py", "interventions.py", "interpretation.py"),
    output:
        "results/{task}/interventions/pca/{variant}.safetensors",
    log:
        "results/logs/pca_spec/{task}/{variant}.log",
    benchmark:
        "results/benchmarks/pca_spec/{task}/{variant}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    script:
        "../workflow/scripts/pca_spec.py"


rule pca_dashboard:
    input:
        unpack(dashboard_inputs),
    output:
        report(
            "results/{task}/pca/dashboard.html",
            caption="../workflow/report/pca_dashboard.rst",
            category="PCA directions",
            labels={"task": "{task}"},
        ),
    log:
        "results/logs/pca_dashboard/{task}.log",
    benchmark:
        "results/benchmarks/pca_dashboard/{task}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    script:
        "../workflow/scripts/pca_dashboard.py"
