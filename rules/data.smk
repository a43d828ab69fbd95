"""Data stage: source tables, then D_amb / D_val / D_OOD per task (DESIGN §2)."""


rule source_table:
    input:
        local=local_source_files,
        code=source_code,
    output:
        "results/data/sources/{source}.parquet",
    log:
        "results/logs/source_table/{source}.log",
    benchmark:
        "results/benchmarks/source_table/{source}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=20,
    params:
        spec=source_spec,
        table=source_table_kind,
    script:
        "../workflow/scripts/source_table.py"


rule frame_task:
    input:
        frames=frame_task_source,
        code=library_code("tasks.py", "artifacts.py"),
    output:
        **split_outputs("results/data/{frame_task}"),
    log:
        "results/logs/frame_task/{frame_task}.log",
    benchmark:
        "results/benchmarks/frame_task/{frame_task}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=frame_task_section,
    script:
        "../workflow/scripts/frame_task.py"


rule mcmc_task:
    input:
        a="results/data/sources/{a}.parquet",
        b="results/data/sources/{b}.parquet",
        code=library_code("tasks.py", "artifacts.py"),
    output:
        **split_outputs("results/data/{a}_{b}"),
    log:
        "results/logs/mcmc_task/{a}_{b}.log",
    benchmark:
        "results/benchmarks/mcmc_task/{a}_{b}.tsv"
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=config["mcmc"]["splits"],
    script:
        "../workflow/scripts/mcmc_task.py"
