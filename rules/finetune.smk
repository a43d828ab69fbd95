"""Fine-tuning with ablation, evaluation and the OOD accuracy tables."""


include: "inputs/finetune.smk"


rule random_directions:
    input:
        unpack(center_input),
        base=rules.base_model.output[0],
        code=library_code("random_directions"),
    output:
        pattern(SPEC, method="random", variant="random/seed{seed}"),
    log:
        log_path("random_directions", "{task}/seed{seed}"),
    benchmark:
        benchmark_path("random_directions", "{task}/seed{seed}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=config["interventions"]["random"],
        layers=config["interventions"]["layers"],
    script:
        script_of("random_directions")


rule finetune:
    input:
        unpack(finetune_inputs),
        code=library_code("finetune"),
    output:
        model=checkpoint_output(f"{RUN_DIR}/model"),
        train_log=f"{RUN_DIR}/train_log.jsonl",
        meta=f"{RUN_DIR}/run.json",
    log:
        log_path("finetune", "{task}/{method}/{selector}/seed{seed}"),
    benchmark:
        benchmark_path("finetune", "{task}/{method}/{selector}/seed{seed}")
    conda:
        "../environment.yml"
    # One thread: two 1-thread fine-tunes side by side train 1.17–1.24× faster than one on 2 threads
    # (docs/benchmarks.md); `--set-threads finetune=N` gives a job more where cores are plenty.
    threads: 1
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=240,
        gpu=1,
    params:
        cfg=finetune_settings,
        model=config["model"],
        task_kind=task_kind,
        answer=training_answer,
        mode=intervention_mode,
    script:
        script_of("finetune")


rule evaluate:
    input:
        unpack(evaluate_inputs),
        code=library_code("evaluate"),
    output:
        predictions=f"{EVAL_DIR}/predictions.parquet",
        metrics=f"{EVAL_DIR}/metrics.parquet",
    log:
        log_path("evaluate", "{task}/{method}/{selector}/seed{seed}/{evaluation}"),
    benchmark:
        benchmark_path("evaluate", "{task}/{method}/{selector}/seed{seed}/{evaluation}")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,
    params:
        cfg=config["evaluation"],
        dtype=config["model"]["dtype"],
        modes=evaluation_modes,
        answer=answer_of_task,
    script:
        script_of("evaluate")


rule ood_table:
    input:
        metrics=all_metrics(),
        code=library_code("ood_table"),
    output:
        parquet=report(
            f"{OOD_TABLE}.parquet",
            caption="../workflow/report/ood_table.rst",
            category="OOD accuracy",
        ),
        csv=report(
            f"{OOD_TABLE}.csv",
            caption="../workflow/report/ood_table.rst",
            category="OOD accuracy",
        ),
        markdown=f"{OOD_TABLE}.md",
        plot=report(
            f"{OOD_TABLE}.png",
            caption="../workflow/report/ood_plot.rst",
            category="OOD accuracy",
        ),
    log:
        log_path("ood_table"),
    benchmark:
        benchmark_path("ood_table")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    script:
        script_of("ood_table")
