"""SAE latents: per-layer SAEs (pretrained, local or trained here), attribution scores over D_amb,
latent windows, selections, intervention specs and dashboards."""


include: "inputs/sae.smk"


rule sae_activations:
    input:
        base=rules.base_model.output[0],
        corpus=rules.corpus.output[0],
        code=library_code("sae_activations"),
    output:
        SAE_ACTIVATIONS,
    log:
        log_path("sae_activations"),
    benchmark:
        benchmark_path("sae_activations")
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
        script_of("sae_activations")


rule provision_sae:
    input:
        unpack(sae_source_inputs),
        base=rules.base_model.output[0],
        code=library_code("provision_sae"),
    output:
        sae=directory(SAE_DIR),
        report=SAE_REPORT,
    log:
        log_path("provision_sae", "layer_{layer}"),
    benchmark:
        benchmark_path("provision_sae", "layer_{layer}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
        gpu=1,
    params:
        cfg=sae_source_settings(config["saes"]),
    script:
        script_of("provision_sae")


rule sae_attribution:
    input:
        unpack(sae_dirs),
        model=attribution_model,
        train=split_path("{dataset}", "train"),
        code=library_code("sae_attribution"),
    output:
        SAE_SCORES,
    log:
        log_path("sae_attribution", "{dataset}"),
    benchmark:
        benchmark_path("sae_attribution", "{dataset}")
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
        script_of("sae_attribution")


rule sae_windows:
    input:
        unpack(sae_dirs),
        base=rules.base_model.output[0],
        corpus=rules.corpus.output[0],
        scores=rules.sae_attribution.output[0],
        train=split_path("{dataset}", "train"),
        code=library_code("sae_windows"),
    output:
        windows=SAE_WINDOWS,
        profiles=SAE_PROFILES,
    log:
        log_path("sae_windows", "{dataset}"),
    benchmark:
        benchmark_path("sae_windows", "{dataset}")
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
        script_of("sae_windows")


rule select_sae:
    input:
        unpack(manual_input("sae")),
        base=rules.base_model.output[0],
        scores=sae_scores_path,
        code=library_code("select_sae"),
    output:
        pattern(
            SELECTION,
            imethod="sae",
            variant="{variant,manual|top|random/seed[0-9]+|random-pool/seed[0-9]+}",
        ),
    log:
        log_path("select_sae", "{task}/{variant}"),
    benchmark:
        benchmark_path("select_sae", "{task}/{variant}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=selection_settings("sae"),
        manual=manual_section("sae", lambda wildcards: manual_selection_file(wildcards.task)),
        task="{task}",
    script:
        script_of("select_sae")


rule sae_spec:
    input:
        unpack(sae_spec_inputs),
        code=library_code("sae_spec"),
    output:
        pattern(SPEC, method="{sae_method}"),
    log:
        log_path("sae_spec", "{task}/{sae_method}/{variant}"),
    benchmark:
        benchmark_path("sae_spec", "{task}/{sae_method}/{variant}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    script:
        script_of("sae_spec")


rule sae_dashboard:
    input:
        unpack(sae_dashboard_inputs),
        code=library_code("sae_dashboard"),
    output:
        report(
            pattern(DASHBOARD, imethod="sae"),
            caption="../workflow/report/sae_dashboard.rst",
            category="SAE latents",
            labels={"task": "{task}"},
        ),
    log:
        log_path("sae_dashboard", "{task}"),
    benchmark:
        benchmark_path("sae_dashboard", "{task}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    params:
        task="{task}",
    script:
        script_of("sae_dashboard")
