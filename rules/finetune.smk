"""Fine-tuning with ablation, evaluation and the OOD accuracy tables (DESIGN §1 steps 4–5)."""


rule base_model:
    input:
        code=library_code("models.py", "pipeline.py", "training.py"),
    output:
        directory("results/models/base"),
    log:
        "results/logs/base_model/base_model.log",
    benchmark:
        "results/benchmarks/base_model/base_model.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=30,
    params:
        model=config["model"],
    script:
        "../workflow/scripts/base_model.py"


rule residual_means:
    input:
        base="results/models/base",
        corpus="results/corpus/corpus.parquet",
        code=library_code("pipeline.py", "windows.py"),
    output:
        "results/corpus/residual_means.safetensors",
    log:
        "results/logs/residual_means/residual_means.log",
    benchmark:
        "results/benchmarks/residual_means/residual_means.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=60,
        gpu=1,
    params:
        batch_size=config["windows"]["batch_size"],
    script:
        "../workflow/scripts/residual_means.py"


rule random_directions:
    input:
        unpack(center_input),
        base="results/models/base",
        code=library_code("interventions.py", "pipeline.py"),
    output:
        "results/{task}/interventions/random/random/seed{seed}.safetensors",
    log:
        "results/logs/random_directions/{task}/seed{seed}.log",
    benchmark:
        "results/benchmarks/random_directions/{task}/seed{seed}.tsv"
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
        "../workflow/scripts/random_directions.py"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        model=checkpoint_output("results/{task}/runs/{method}/{selector}/seed{seed}/model"),
        train_log="results/{task}/runs/{method}/{selector}/seed{seed}/train_log.jsonl",
        meta="results/{task}/runs/{method}/{selector}/seed{seed}/run.json",
    log:
        "results/logs/finetune/{task}/{method}/{selector}/seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{task}/{method}/{selector}/seed{seed}.tsv"
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(12000),
        runtime=240,
        gpu=1,
    params:
        cfg=config["finetune"],
        model=config["model"],
        task_kind=task_kind,
        answer=training_answer,
        mode=intervention_mode,
    script:
        "../workflow/scripts/finetune.py"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        predictions="results/{task}/eval/{method}/{selector}/seed{seed}/{evaluation}/predictions.parquet",
        metrics="results/{task}/eval/{method}/{selector}/seed{seed}/{evaluation}/metrics.parquet",
    log:
        "results/logs/evaluate/{task}/{method}/{selector}/seed{seed}/{evaluation}.log",
    benchmark:
        "results/benchmarks/evaluate/{task}/{method}/{selector}/seed{seed}/{evaluation}.tsv"
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
        "../workflow/scripts/evaluate.py"


rule oracle_directions:
    input:
        model=oracle_model,
        train=lambda wc: f"results/data/{task_dataset(wc.task)}/train.parquet",
        skyline=lambda wc: f"results/data/{task_dataset(wc.task)}/skyline.parquet",
        code=library_code("oracle.py", "interventions.py", "activations.py", "pipeline.py"),
    output:
        "results/{task}/interventions/oracle/{eraser}.safetensors",
    log:
        "results/logs/oracle_directions/{task}/{eraser}.log",
    benchmark:
        "results/benchmarks/oracle_directions/{task}/{eraser}.tsv"
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
        "../workflow/scripts/oracle_directions.py"


checkpoint survey_filter:
    input:
        metrics=survey_metrics([NO_INTERVENTION]),
        code=library_code("survey.py", "tables.py", "pipeline.py"),
    output:
        "results/survey/paper_filter.json",
    log:
        "results/logs/survey_filter/survey_filter.log",
    benchmark:
        "results/benchmarks/survey_filter/survey_filter.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        criteria={key: config["survey"][key] for key in ("max_none_ood", "min_none_val")},
    script:
        "../workflow/scripts/survey_filter.py"


rule survey:
    input:
        unpack(survey_inputs),
        code=library_code("survey.py", "tables.py", "pipeline.py"),
    output:
        parquet=report(
            "results/survey/survey.parquet",
            caption="../workflow/report/survey.rst",
            category="Task survey",
        ),
        csv="results/survey/survey.csv",
        markdown="results/survey/survey.md",
        plot=report(
            "results/survey/survey.png",
            caption="../workflow/report/survey.rst",
            category="Task survey",
        ),
        eligible="results/survey/eligible.json",
    log:
        "results/logs/survey/survey.log",
    benchmark:
        "results/benchmarks/survey/survey.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        concepts=survey_concepts(),
        criteria={
            key: config["survey"][key]
            for key in ("max_none_ood", "min_none_val", "min_skyline_ood")
        },
    script:
        "../workflow/scripts/survey.py"


rule ood_table:
    input:
        metrics=all_metrics(),
        code=library_code("tables.py", "pipeline.py"),
    output:
        parquet=report(
            "results/tables/ood_accuracy.parquet",
            caption="../workflow/report/ood_table.rst",
            category="OOD accuracy",
        ),
        csv=report(
            "results/tables/ood_accuracy.csv",
            caption="../workflow/report/ood_table.rst",
            category="OOD accuracy",
        ),
        markdown="results/tables/ood_accuracy.md",
        plot=report(
            "results/tables/ood_accuracy.png",
            caption="../workflow/report/ood_plot.rst",
            category="OOD accuracy",
        ),
    log:
        "results/logs/ood_table/ood_table.log",
    benchmark:
        "results/benchmarks/ood_table/ood_table.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    script:
        "../workflow/scripts/ood_table.py"
