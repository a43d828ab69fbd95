"""The emergent-misalignment half: chat SFT data, LoRA fine-tunes with the projection hooks, sampled
answers, judges and the misalignment table; the EM model's PCA directions and SAE latents reuse the
rules of the other half (`use rule`), with the EM model, its responses and its chat set as inputs.
"""


include: "inputs/em.smk"


rule em_data:
    input:
        unpack(em_source_files),
        code=library_code("em_data"),
    output:
        train=EM_DATA.format(split="train"),
        held_out=EM_DATA.format(split="held_out"),
    log:
        log_path("em_data"),
    benchmark:
        benchmark_path("em_data")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(4000),
        runtime=30,
    params:
        cfg=config["em"]["data"],
    script:
        script_of("em_data")


use rule base_model as em_base_model with:
    input:
        unpack(em_model_package),
        code=library_code("base_model"),
    output:
        directory(EM_BASE),
    log:
        log_path("em_base_model", "{em_model}"),
    benchmark:
        benchmark_path("em_base_model", "{em_model}")
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
    params:
        model=em_model_section,


rule em_finetune:
    input:
        unpack(em_finetune_inputs),
        code=library_code("em_finetune"),
    output:
        adapter=directory(EM_ADAPTER),
        train_log=EM_TRAIN_LOG,
        meta=EM_RUN_META,
    log:
        log_path("em_finetune", "{em_model}/{method}/{selector}/seed{seed}"),
    benchmark:
        benchmark_path("em_finetune", "{em_model}/{method}/{selector}/seed{seed}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=600,
        gpu=1,
    params:
        cfg=config["em"]["finetune"],
        mode=em_intervention_mode,
    script:
        script_of("em_finetune")


rule em_responses:
    input:
        unpack(em_prompt_file),
        base=EM_BASE,
        code=library_code("em_responses"),
    output:
        EM_RESPONSES,
    log:
        log_path("em_responses", "{em_model}"),
    benchmark:
        benchmark_path("em_responses", "{em_model}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
        gpu=1,
    params:
        cfg=config["em"]["responses"],
    script:
        script_of("em_responses")


rule em_pca_moments:
    input:
        base=EM_BASE,
        adapter=em_pretuned_adapter,
        responses=EM_RESPONSES,
        code=library_code("em_pca_moments"),
    output:
        EM_PCA_MOMENTS,
    log:
        log_path("em_pca_moments", "{em_model}"),
    benchmark:
        benchmark_path("em_pca_moments", "{em_model}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=120,
        gpu=1,
    params:
        layers=em_layers,
        batch_size=config["em"]["pca"]["batch_size"],
    script:
        script_of("em_pca_moments")


use rule pca_components as em_pca_components with:
    input:
        moments=rules.em_pca_moments.output[0],
        code=library_code("pca_components"),
    output:
        components=EM_PCA_COMPONENTS,
        summary=EM_PCA_SUMMARY,
    log:
        log_path("em_pca_components", "{em_model}"),
    benchmark:
        benchmark_path("em_pca_components", "{em_model}")
    params:
        cfg={"components": config["em"]["pca"]["components"]},


use rule pca_windows as em_pca_windows with:
    input:
        base=EM_BASE,
        corpus=EM_RESPONSES,
        components=rules.em_pca_components.output.components,
        train=EM_DATA.format(split="train"),
        code=library_code("pca_windows"),
    output:
        windows=EM_PCA_WINDOWS,
        profiles=EM_PCA_PROFILES,
    log:
        log_path("em_pca_windows", "{em_model}"),
    benchmark:
        benchmark_path("em_pca_windows", "{em_model}")
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,


use rule select_pca as em_select_pca with:
    input:
        summary=rules.em_pca_components.output.summary,
        code=library_code("select_pca"),
    output:
        pattern(EM_SELECTION, imethod="pca", variant="{variant,manual|top|random/seed[0-9]+}"),
    log:
        log_path("em_select_pca", "{em_model}/{variant}"),
    benchmark:
        benchmark_path("em_select_pca", "{em_model}/{variant}")
    params:
        cfg=em_selection_settings("pca"),
        manual=manual_section("pca", lambda wildcards: em_manual_file(wildcards.em_model)),
        task=em_task_label,


use rule pca_spec as em_pca_spec with:
    input:
        selection=pattern(EM_SELECTION, imethod="pca"),
        components=rules.em_pca_components.output.components,
        code=library_code("pca_spec"),
    output:
        pattern(EM_SPEC, method="pca"),
    log:
        log_path("em_pca_spec", "{em_model}/{variant}"),
    benchmark:
        benchmark_path("em_pca_spec", "{em_model}/{variant}")


use rule steer_spec as em_steer_spec with:
    input:
        unpack(em_steer_reference),
        directions=pattern(EM_SPEC, method="pca"),
        moments=rules.em_pca_moments.output[0],
        code=library_code("steer_spec"),
    output:
        pattern(EM_SPEC, method=STEERING),
    log:
        log_path("em_steer_spec", "{em_model}/{variant}"),
    benchmark:
        benchmark_path("em_steer_spec", "{em_model}/{variant}")
    params:
        coefficient=EM["interventions"]["steer"]["coefficient"],


use rule random_directions as em_random_directions with:
    input:
        base=EM_BASE,
        code=library_code("random_directions"),
    output:
        pattern(EM_SPEC, method="random", variant="random/seed{seed}"),
    log:
        log_path("em_random_directions", "{em_model}/seed{seed}"),
    benchmark:
        benchmark_path("em_random_directions", "{em_model}/seed{seed}")
    params:
        cfg={"k": config["em"]["interventions"]["random_k"]},
        layers=em_layers,


use rule pca_dashboard as em_pca_dashboard with:
    input:
        unpack(em_dashboard_selections("pca")),
        windows=rules.em_pca_windows.output.windows,
        profiles=rules.em_pca_windows.output.profiles,
        summary=rules.em_pca_components.output.summary,
        code=library_code("pca_dashboard"),
    output:
        report(
            EM_PCA_DASHBOARD,
            caption="../workflow/report/pca_dashboard.rst",
            category="Emergent misalignment",
            labels={"model": "{em_model}"},
        ),
    log:
        log_path("em_pca_dashboard", "{em_model}"),
    benchmark:
        benchmark_path("em_pca_dashboard", "{em_model}")
    params:
        task=em_task_label,


use rule sae_activations as em_sae_activations with:
    input:
        base=EM_BASE,
        corpus=EM_RESPONSES,
        code=library_code("sae_activations"),
    output:
        EM_SAE_ACTIVATIONS,
    log:
        log_path("em_sae_activations", "{em_model}"),
    benchmark:
        benchmark_path("em_sae_activations", "{em_model}")
    params:
        layers=em_layers,
        batch_size=EM["saes"]["batch_size"],


use rule provision_sae as em_provision_sae with:
    input:
        unpack(em_sae_source_inputs),
        base=EM_BASE,
        code=library_code("provision_sae"),
    output:
        sae=directory(EM_SAE_DIR),
        report=EM_SAE_REPORT,
    log:
        log_path("em_provision_sae", "{em_model}/layer_{layer}"),
    benchmark:
        benchmark_path("em_provision_sae", "{em_model}/layer_{layer}")
    params:
        cfg=em_sae_source,


rule em_sae_candidates:
    input:
        unpack(em_sae_dirs),
        base=EM_BASE,
        adapter=em_pretuned_adapter,
        train=EM_DATA.format(split="train"),
        responses=EM_RESPONSES,
        code=library_code("em_sae_candidates"),
    output:
        EM_SAE_SCORES,
    log:
        log_path("em_sae_candidates", "{em_model}"),
    benchmark:
        benchmark_path("em_sae_candidates", "{em_model}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=120,
        gpu=1,
    params:
        cfg=config["em"]["sae_candidates"],
        max_tokens=em_max_tokens(),
    script:
        script_of("em_sae_candidates")


use rule sae_windows as em_sae_windows with:
    input:
        unpack(em_sae_dirs),
        base=EM_BASE,
        corpus=EM_RESPONSES,
        scores=rules.em_sae_candidates.output[0],
        train=EM_DATA.format(split="train"),
        code=library_code("sae_windows"),
    output:
        windows=EM_SAE_WINDOWS,
        profiles=EM_SAE_PROFILES,
    log:
        log_path("em_sae_windows", "{em_model}"),
    benchmark:
        benchmark_path("em_sae_windows", "{em_model}")


use rule select_sae as em_select_sae with:
    input:
        base=EM_BASE,
        scores=rules.em_sae_candidates.output[0],
        code=library_code("select_sae"),
    output:
        pattern(EM_SELECTION, imethod="sae", variant="{variant,manual|top|random/seed[0-9]+}"),
    log:
        log_path("em_select_sae", "{em_model}/{variant}"),
    benchmark:
        benchmark_path("em_select_sae", "{em_model}/{variant}")
    params:
        cfg=em_selection_settings("sae"),
        manual=manual_section("sae", lambda wildcards: em_manual_file(wildcards.em_model)),
        task=em_task_label,


use rule sae_spec as em_sae_spec with:
    input:
        unpack(em_sae_dirs),
        selection=pattern(EM_SELECTION, imethod="sae"),
        code=library_code("sae_spec"),
    output:
        pattern(EM_SPEC, method="{sae_method}"),
    log:
        log_path("em_sae_spec", "{em_model}/{sae_method}/{variant}"),
    benchmark:
        benchmark_path("em_sae_spec", "{em_model}/{sae_method}/{variant}")


use rule sae_dashboard as em_sae_dashboard with:
    input:
        unpack(em_dashboard_selections("sae")),
        windows=rules.em_sae_windows.output.windows,
        profiles=rules.em_sae_windows.output.profiles,
        scores=rules.em_sae_candidates.output[0],
        reports=em_sae_reports,
        code=library_code("sae_dashboard"),
    output:
        report(
            EM_SAE_DASHBOARD,
            caption="../workflow/report/sae_dashboard.rst",
            category="Emergent misalignment",
            labels={"model": "{em_model}"},
        ),
    log:
        log_path("em_sae_dashboard", "{em_model}"),
    benchmark:
        benchmark_path("em_sae_dashboard", "{em_model}")
    params:
        task=em_task_label,


rule em_sample:
    input:
        unpack(em_question_file),
        unpack(em_sample_adapter),
        base=EM_BASE,
        held_out=EM_DATA.format(split="held_out"),
        code=library_code("em_sample"),
    output:
        answers=EM_ANSWERS,
        code_answers=EM_CODE_ANSWERS,
    log:
        log_path("em_sample", "{em_model}/{method}/{selector}/seed{seed}"),
    benchmark:
        benchmark_path("em_sample", "{em_model}/{method}/{selector}/seed{seed}")
    conda:
        "../environment.yml"
    threads: 1  # 1 thread samples at 0.74x the speed of 2: two side by side win (docs/benchmarks.md)
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=600,
        gpu=1,
    params:
        sampling=config["em"]["sampling"],
        questions=config["em"]["questions"],
    script:
        script_of("em_sample")


rule em_judge_model:
    input:
        unpack(em_judge_model_package),
        code=library_code("em_judge_model"),
    output:
        directory(EM_JUDGE_MODEL),
    log:
        log_path("em_judge_model", "{judge_model}"),
    benchmark:
        benchmark_path("em_judge_model", "{judge_model}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
    params:
        model=em_judge_model_section,
    script:
        script_of("em_judge_model")


rule em_judge:
    input:
        unpack(em_judge_checkpoints),
        answers=rules.em_sample.output.answers,
        code_answers=rules.em_sample.output.code_answers,
        code=library_code("em_judge"),
    output:
        answers=EM_JUDGED_ANSWERS,
        code_answers=EM_JUDGED_CODE_ANSWERS,
    log:
        log_path("em_judge", "{em_model}/{method}/{selector}/seed{seed}"),
    benchmark:
        benchmark_path("em_judge", "{em_model}/{method}/{selector}/seed{seed}")
    conda:
        "../environment.yml"
    threads: 1  # two judges side by side on 2 cores (docs/benchmarks.md)
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=600,
    params:
        judges=config["em"]["judges"],
    script:
        script_of("em_judge")


rule em_judge_check:
    input:
        unpack(em_judge_checkpoints),
        unpack(em_labelled_file),
        code=library_code("em_judge_check"),
    output:
        scores=EM_JUDGE_CHECK_SCORES,
        summary=report(
            EM_JUDGE_CHECK_SUMMARY,
            caption="../workflow/report/em_judge_check.rst",
            category="Emergent misalignment",
        ),
        markdown=EM_JUDGE_CHECK_MARKDOWN,
        examples=report(
            EM_JUDGE_CHECK_EXAMPLES,
            caption="../workflow/report/em_judge_check.rst",
            category="Emergent misalignment",
        ),
    log:
        log_path("em_judge_check"),
    benchmark:
        benchmark_path("em_judge_check")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=120,
    params:
        judges=config["em"]["judges"],
        cfg=config["em"]["judge_check"],
    script:
        script_of("em_judge_check")


rule em_table:
    input:
        answers=em_judged(EM_JUDGED_ANSWERS),
        code_answers=em_judged(EM_JUDGED_CODE_ANSWERS),
        code=library_code("em_table"),
    output:
        parquet=EM_TABLE_PARQUET,
        csv=report(
            EM_TABLE_CSV,
            caption="../workflow/report/em_table.rst",
            category="Emergent misalignment",
        ),
        markdown=EM_TABLE_MARKDOWN,
        plot=report(
            EM_TABLE_PLOT,
            caption="../workflow/report/em_plot.rst",
            category="Emergent misalignment",
        ),
    log:
        log_path("em_table"),
    benchmark:
        benchmark_path("em_table")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    script:
        script_of("em_table")


rule em:
    """The emergent-misalignment half on every configured model (`em.runs.models`, else all of `em.models`)."""
    input:
        em_targets(),
