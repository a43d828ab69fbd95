"""Data stage: source tables, then D_amb / D_val / D_OOD (and the skyline split) per task."""


include: "inputs/data.smk"


rule source_table:
    input:
        local=local_source_files,
        code=library_code("source_table"),
    output:
        SOURCE_TABLE,
    log:
        log_path("source_table", "{source}"),
    benchmark:
        benchmark_path("source_table", "{source}")
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
        script_of("source_table")


rule frame_task:
    input:
        frames=frame_task_source,
        code=library_code("frame_task"),
    output:
        **split_outputs("{frame_task}"),
    log:
        log_path("frame_task", "{frame_task}"),
    benchmark:
        benchmark_path("frame_task", "{frame_task}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=frame_task_section,
    script:
        script_of("frame_task")


rule mcmc_task:
    input:
        a=SOURCE_TABLE.format(source="{a}"),
        b=SOURCE_TABLE.format(source="{b}"),
        code=library_code("mcmc_task"),
    output:
        **split_outputs("{a}_{b}"),
    log:
        log_path("mcmc_task", "{a}_{b}"),
    benchmark:
        benchmark_path("mcmc_task", "{a}_{b}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(2000),
        runtime=10,
    params:
        cfg=config["mcmc"]["splits"],
    script:
        script_of("mcmc_task")
