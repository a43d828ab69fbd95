"""SAE latents: per-layer SAEs (pretrained, local or trained here), attribution scores over D_amb,
latent windows, selections, intervention specs and dashboards (DESIGN §1 steps 1–4)."""


rule sae_activations:
    input:
        base="results/models/base",
        corpus="results/corpus/corpus.parquet",
        code=library_code("sae_pipeline.py", "windows.py", "activations.py"),
    output:
        "results/saes/activations.safetensors",
    log:
        "results/logs/sae_activations/sae_activations.log",
    benchmark:
        "results/benchmarks/sae_activations/sae_activations.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,
    params:
        layers=sae_layers(),
        batch_size=config["saes"]["batch_size"],
    script:
        "../workflow/scripts/sae_activations.py"


rule provision_sae:
    input:
        unpack(sae_source_inputs),
        base="results/models/base",
        code=library_code("saes.py", "sae_pipeline.py"),
    output:
        sae=directory("results/saes/layer_{layer}"),
        report="results/saes/reports/layer_{layer}.parquet",
    log:
        "results/logs/provision_sae/layer_{layer}.log",
    benchmark:
        "results/benchmarks/provision_sae/layer_{layer}.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
        gpu=1,
    params:
        # not `layers` or `batch_size`: adding a layer must not retrain the others
        cfg=config_keys("saes", "from", "release", "sae_id", "path", "train"),
    script:
        "../workflow/scripts/provision_sae.py"


rule sae_attribution:
    input:
        unpack(sae_dirs),
        model=attribution_model,
        train="results/data/{dataset}/train.parquet",
        code=library_code("attribution.py", "sae_pipeline.py", "interventions.py"),
    output:
        "results/{dataset}/sae/scores.parquet",
    log:
        "results/logs/sae_attribution/{dataset}.log",
    benchmark:
        "results/benchmarks/sae_attribution/{dataset}.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,
    params:
        cfg=config["attribution"],
    script:
        "../workflow/scripts/sae_attribution.py"


rule sae_windows:
    input:
        unpack(sae_dirs),
        base="results/models/base",
        corpus="results/corpus/corpus.parquet",
        scores="results/{dataset}/sae/scores.parquet",
        code=library_code("windows.py", "sae_pipeline.py"),
    output:
        "results/{dataset}/sae/windows.parquet",
    log:
        "results/logs/sae_windows/{dataset}.log",
    benchmark:
        "results/benchmarks/sae_windows/{dataset}.tsv"
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
        "../workflow/scripts/sae_windows.py"


rule select_sae:
    input:
        unpack(manual_input),
        base="results/models/base",
        scores=sae_scores_path,
        code=library_code("selection.py", "sae_pipeline.py"),
    output:
        "results/{task}/selections/sae/{variant,manual|top|random/seed[0-9]+}.json",
    log:
        "results/logs/select_sae/{task}/{variant}.log",
    benchmark:
        "results/benchmarks/select_sae/{task}/{variant}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=selection_settings("sae"),
    script:
        "../workflow/scripts/select_sae.py"


rule sae_spec:
    input:
        unpack(sae_spec_inputs),
        code=library_code("selection.py", "interventions.py", "sae_pipeline.py"),
    output:
        "results/{task}/interventions/{sae_method}/{variant}.safetensors",
    log:
        "results/logs/sae_spec/{task}/{sae_method}/{variant}.log",
    benchmark:
        "results/benchmarks/sae_spec/{task}/{sae_method}/{variant}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    script:
        "../workflow/scripts/sae_spec.py"


rule sae_dashboard:
    input:
        unpack(sae_dashboard_inputs),
    output:
        report(
            "results/{task}/sae/dashboard.html",
            caption="../workflow/report/sae_dashboard.rst",
            category="SAE latents",
            labels={"task": "{task}"},
        ),
    log:
        "results/logs/sae_dashboard/{task}.log",
    benchmark:
        "results/benchmarks/sae_dashboard/{task}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    script:
        "../workflow/scripts/sae_dashboard.py"
