"""PCA directions: activation-difference moments, components, windows, selections, specs, dashboards."""


include: "inputs/pca.smk"


rule pca_moments:
    input:
        base=rules.base_model.output[0],
        tuned=pretuned_model,
        train=split_path("{dataset}", "train"),
        code=library_code("pca_moments"),
    output:
        PCA_MOMENTS,
    log:
        log_path("pca_moments", "{dataset}"),
    benchmark:
        benchmark_path("pca_moments", "{dataset}")
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
        script_of("pca_moments")


rule pca_components:
    input:
        moments=rules.pca_moments.output[0],
        code=library_code("pca_components"),
    output:
        components=PCA_COMPONENTS,
        summary=PCA_SUMMARY,
    log:
        log_path("pca_components", "{dataset}"),
    benchmark:
        benchmark_path("pca_components", "{dataset}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    params:
        cfg=pca_section("components"),
    script:
        script_of("pca_components")


rule pca_windows:
    input:
        base=rules.base_model.output[0],
        corpus=rules.corpus.output[0],
        components=rules.pca_components.output.components,
        train=split_path("{dataset}", "train"),
        code=library_code("pca_windows"),
    output:
        windows=PCA_WINDOWS,
        profiles=PCA_PROFILES,
    log:
        log_path("pca_windows", "{dataset}"),
    benchmark:
        benchmark_path("pca_windows", "{dataset}")
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
        script_of("pca_windows")


rule select_pca:
    input:
        unpack(manual_input("pca")),
        summary=pca_summary,
        code=library_code("select_pca"),
    output:
        pattern(
            SELECTION,
            imethod="pca",
            variant="{variant,manual|top|random/seed[0-9]+|random-pool/seed[0-9]+}",
        ),
    log:
        log_path("select_pca", "{task}/{variant}"),
    benchmark:
        benchmark_path("select_pca", "{task}/{variant}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=selection_settings("pca"),
        manual=manual_section("pca", lambda wildcards: manual_selection_file(wildcards.task)),
        task="{task}",
    script:
        script_of("select_pca")


rule pca_spec:
    input:
        unpack(center_input),
        selection=pattern(SELECTION, imethod="pca"),
        components=pca_components_path,
        code=library_code("pca_spec"),
    output:
        pattern(SPEC, method="pca"),
    log:
        log_path("pca_spec", "{task}/{variant}"),
    benchmark:
        benchmark_path("pca_spec", "{task}/{variant}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    script:
        script_of("pca_spec")


rule steer_spec:
    input:
        unpack(steer_reference),
        directions=pattern(SPEC, method="pca"),
        moments=pca_moments_path,
        code=library_code("steer_spec"),
    output:
        pattern(SPEC, method=STEERING),
    log:
        log_path("steer_spec", "{task}/{variant}"),
    benchmark:
        benchmark_path("steer_spec", "{task}/{variant}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        coefficient=config["interventions"]["steer"]["coefficient"],
    script:
        script_of("steer_spec")


rule pca_dashboard:
    input:
        unpack(pca_dashboard_inputs),
        code=library_code("pca_dashboard"),
    output:
        report(
            pattern(DASHBOARD, imethod="pca"),
            caption="../workflow/report/pca_dashboard.rst",
            category="PCA directions",
            labels={"task": "{task}"},
        ),
    log:
        log_path("pca_dashboard", "{task}"),
    benchmark:
        benchmark_path("pca_dashboard", "{task}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=10,
    params:
        task="{task}",
    script:
        script_of("pca_dashboard")
