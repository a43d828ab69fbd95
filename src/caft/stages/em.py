"""Stages of `rules/em.smk`: the emergent-misalignment half — chat SFT data, LoRA fine-tunes with the
projection hooks, the base model's answers to generic chat prompts (what the PCA of tuned − base
differences reads), sampled answers to the evaluation questions, judges, and the misalignment table.

The PCA components, windows, dashboard, selections and specs of the EM model, and its SAEs, SAE windows,
selections, specs and dashboard, reuse the stage functions of `caft.stages.pca` and `caft.stages.sae`
(rules/em.smk declares them with ``use rule``); only the SAE candidates (`em_sae_candidates`) are EM's
own."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from caft.artifacts import atomic_path, provenance, write_json, write_parquet
from caft.directions.moments import accumulate_differences, save_moments
from caft.directions.sae_folders import load_sae_folders
from caft.em.candidates import SOURCES as CANDIDATE_SOURCES
from caft.em.candidates import EmSaeCandidatesConfig, answer_attribution, latent_differences, union_candidates
from caft.em.chat_data import split_chat
from caft.em.chat_sources import load_chat_source
from caft.em.judge_check import (BUILTIN_LABELLED, CHECKED, examples_html, judged_table, load_labelled, summary,
                                 summary_markdown)
from caft.em.judges import make_judge, with_checkpoint
from caft.em.metrics import RATES, misalignment_summary, plot_misalignment_vs_vulnerable, vulnerable_summary
from caft.em.questions import load_chat_prompts, load_questions, sampling_plan
from caft.em.sampling import SamplingConfig, sample_answers, sample_answers_vllm
from caft.em.sft import SftConfig, load_adapter, save_adapter, sft
from caft.errors import ConfigError, DataError
from caft.finetune.objectives import encode_table
from caft.interpret.clients import job_record
from caft.model.hooks import check_layers
from caft.model.loading import ModelSpec, load_checkpoint, materialize_checkpoint
from caft.model.chat import chat_prompt
from caft.finetune.training_job import training_job
from caft.tables import markdown_table, mean_sem, over_seeds, write_tables

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BUILTIN = "builtin"
"""`em.questions.path` / `em.responses.prompts`: the files shipped in ``caft/em/data/``."""

DATA_DIR = Path(__file__).resolve().parent.parent / "em" / "data"


def builtin_file(path: str, name: str) -> Path:
    """A user's file, or the shipped one for ``builtin``."""
    return DATA_DIR / name if path == BUILTIN else Path(path)


def em_data(source: Mapping[str, Any], held_out_fraction: float, seed: int, train_path: Path,
            held_out_path: Path) -> None:
    """The chat SFT set, schema-checked, split into training rows and held-out coding prompts.

    Each row keeps its checked ``messages`` (JSON) and gets ``prompt`` (the first user message) and
    ``answer`` (the last assistant message): the held-out prompts are what the in-distribution
    (``vulnerable``) evaluation asks, and the dashboard's training examples show prompt and answer."""
    table = load_chat_source(source)
    turns = [json.loads(m) for m in table["messages"]]
    table = table.assign(prompt=[next(t["content"] for t in ts if t["role"] == "user") for ts in turns],
                         answer=[ts[-1]["content"] for ts in turns])
    train, held_out = split_chat(table, held_out_fraction, seed)
    record = provenance("em_data", {"source": dict(source), "held_out_fraction": held_out_fraction, "seed": seed})
    log.info("em data: %d training rows, %d held out", len(train), len(held_out))
    write_parquet(train, train_path, record)
    write_parquet(held_out, held_out_path, record)


def em_finetune(cfg: SftConfig, base_dir: Path, train_path: Path, spec_path: Path | None, seed: int, mode: str,
                key: dict[str, Any], adapter_dir: Path, log_path: Path, meta_path: Path,
                merged_dir: Path | None = None) -> None:
    """One LoRA fine-tune from the base model on the chat set, with the spec's directions ablated as
    ``mode`` says; the adapter is saved with ``save_pretrained`` (and merged, when asked)."""
    training_job(sft, lambda model, tokenizer: save_adapter(model, tokenizer, adapter_dir, merged_dir), cfg,
                 "em.finetune", base_dir, "float32", train_path, spec_path, seed, mode, adapter_dir, log_path,
                 meta_path, key)


def em_responses(prompts_path: str, sampling: SamplingConfig, base_dir: Path, out_path: Path) -> None:
    """The base model's answers to generic chat prompts (never the evaluation questions), as token ids
    with the first answer position: the PCA reads tuned − base differences on these answer tokens, and
    the windows and dashboard read the same texts as their corpus."""
    prompts = load_chat_prompts(builtin_file(prompts_path, "chat_prompts.yaml"))
    model, tokenizer = load_checkpoint(base_dir)
    plan = pd.DataFrame({"question_id": [f"prompt{i}" for i in range(len(prompts))], "paraphrase_index": 0,
                         "sample_index": 0, "prompt": prompts, "system": None})
    answers = sample_answers(model, tokenizer, plan, sampling)
    rows = []
    for prompt, answer in zip(answers["prompt"], answers["answer"], strict=True):
        head = chat_prompt(tokenizer, [{"role": "user", "content": prompt}])
        ids = tokenizer(head + answer, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        if start >= len(ids):
            continue  # an empty answer has no answer tokens
        rows.append({"prompt": prompt, "answer": answer, "text": head + answer, "input_ids": ids,
                     "answer_start": start, "n_tokens": len(ids)})
    if not rows:
        raise DataError(f"{out_path}: the base model answered none of the {len(prompts)} chat prompts")
    table = pd.DataFrame(rows)
    log.info("responses: %d answers, %d answer tokens", len(table), int((table.n_tokens - table.answer_start).sum()))
    write_parquet(table, out_path, provenance("em_responses", dataclasses.asdict(sampling), prompts=prompts_path))


def answer_positions(tokenizer: PreTrainedTokenizerBase, responses: pd.DataFrame) -> list[int]:
    """Each response's first answer position in the tokens the difference passes see: they encode the
    text with the tokenizer's special tokens (a BOS for Llama-style tokenizers), which ``answer_start``
    (counted in ``input_ids``, without them) does not hold."""
    added = len(tokenizer("x")["input_ids"]) - len(tokenizer("x", add_special_tokens=False)["input_ids"])
    return [start + added for start in responses["answer_start"]]


def em_pca_moments(layers: list[int], batch_size: int, base_dir: Path, adapter_dir: Path, responses_path: Path,
                   out_path: Path) -> None:
    """Streaming moments of tuned − base residual differences on the answer tokens of the responses."""
    base, tokenizer = load_checkpoint(base_dir)
    tuned = load_adapter(base_dir, adapter_dir)[0].merge_and_unload()
    responses = pd.read_parquet(responses_path)
    moments = accumulate_differences(base, tuned, tokenizer, responses["text"].tolist(), check_layers(base, layers),
                                     include_bos=False, batch_size=batch_size, progress=True,
                                     first_positions=answer_positions(tokenizer, responses))
    log.info("moments over %d answer tokens per layer", next(iter(moments.values())).count)
    save_moments(moments, out_path, provenance("em_pca_moments", {"layers": layers, "batch_size": batch_size},
                                               tuned=str(adapter_dir), texts=len(responses)))


def em_sae_candidates(cfg: EmSaeCandidatesConfig, max_tokens: int, base_dir: Path, adapter_dir: Path,
                      train_path: Path, responses_path: Path, sae_dirs: Mapping[int, Path], out_path: Path) -> None:
    """The SAE candidate latents of the EM model (`caft.em.candidates`): attribution of the chat set's
    answer log-likelihood under the base model, and the mean latent difference and difference encoding
    of the pretuned model on the responses' answer tokens; ``top`` marks their union."""
    base, tokenizer = load_checkpoint(base_dir)
    saes = load_sae_folders(sae_dirs, base.device)
    table = pd.read_parquet(train_path)
    rows = table.iloc[: cfg.max_examples] if cfg.max_examples else table
    start = time.perf_counter()
    attribution = answer_attribution(base, tokenizer, encode_table(tokenizer, rows, max_tokens), saes, cfg.batch_size,
                                     progress=True)
    attribution_seconds = time.perf_counter() - start
    tuned = load_adapter(base_dir, adapter_dir)[0].merge_and_unload()
    responses = pd.read_parquet(responses_path)
    differences = latent_differences(base, tuned, tokenizer, responses["text"].tolist(),
                                     answer_positions(tokenizer, responses), saes, cfg.batch_size, progress=True)
    scores = union_candidates(attribution, differences, cfg.top_per_layer)
    scores["validation_effect"] = scores["exact_effect"] = float("nan")  # no exact-ablation check here
    counts = {source: int(scores["sources"].str.contains(source).sum()) for source in CANDIDATE_SOURCES}
    log.info("%d candidates over layers %s (%s); attribution over %d rows in %.0f s", int(scores["top"].sum()),
             sorted(saes), ", ".join(f"{source} {n}" for source, n in counts.items()), len(rows), attribution_seconds)
    write_parquet(scores, out_path, provenance("em_sae_candidates", cfg, max_tokens=max_tokens, rows=len(rows),
                                               tuned=str(adapter_dir), mean_metric=attribution.attrs["mean_metric"]))


def em_sample(sampling: SamplingConfig, questions_path: str, samples_per_paraphrase: int | None, base_dir: Path,
              adapter_dir: Path | None, held_out_path: Path, key: dict[str, Any], answers_path: Path,
              code_path: Path) -> None:
    """Sampled answers of the fine-tuned model (deployed: no hooks; without an adapter, the base model) to
    the evaluation questions, and one answer per held-out coding prompt (the in-distribution task).

    ``backend: vllm`` samples the merged checkpoint (``em.finetune.lora.merge``) through vLLM."""
    questions = load_questions(builtin_file(questions_path, "questions.yaml"), samples_per_paraphrase)
    held_out = pd.read_parquet(held_out_path)
    plans = {
        "answers": sampling_plan(questions),
        "code": pd.DataFrame({"question_id": held_out["id"], "paraphrase_index": 0, "sample_index": 0,
                              "prompt": held_out["prompt"], "system": None}),
    }
    if sampling.backend == "vllm":
        merged = adapter_dir / "merged" if adapter_dir else base_dir
        if not merged.is_dir():
            raise ConfigError(f"em.sampling.backend vllm samples a merged checkpoint, but {merged} does not exist: "
                              "set em.finetune.lora.merge: true")
        sampled = {name: sample_answers_vllm(merged, plan, sampling) for name, plan in plans.items()}
    else:
        model, tokenizer = load_adapter(base_dir, adapter_dir) if adapter_dir else load_checkpoint(base_dir)
        sampled = {name: sample_answers(model, tokenizer, plan, sampling) for name, plan in plans.items()}
    record = provenance("em_sample", dataclasses.asdict(sampling), questions=questions_path, **key)
    write_parquet(sampled["answers"].assign(**key), answers_path, record)
    write_parquet(sampled["code"].assign(**key), code_path, record)


JUDGED_COLUMNS = {"answers": ("aligned", "coherent"), "code": ("vulnerable",)}
"""The criteria each answer set is judged on."""


def em_judge_model(spec: ModelSpec, out_dir: Path) -> None:
    """A local judge given as ``embedded`` or a ``.gguf`` file as a dequantized checkpoint, converted once
    here instead of in every judge job (about 20 s each for SmolLM2)."""
    materialize_checkpoint(spec, out_dir)
    write_json(provenance("em_judge_model", spec), out_dir / "caft_provenance.json")


def em_judge(judges: Mapping[str, Mapping[str, Any]], answers_path: Path, code_path: Path, judged_answers: Path,
             judged_code: Path, checkpoints: Mapping[str, Path] | None = None) -> None:
    """Scores 0–100 (or none) per answer and criterion, each criterion by its configured judge (criteria
    with the same judge section share one judge: a local model is loaded once). `checkpoints` holds the
    dequantized checkpoints of local judges given as ``embedded`` or a ``.gguf`` (`checkpoint_name`).
    Every judge answer is kept in the job's record beside `judged_answers` until both tables are
    written, so a killed job resumes where it stopped."""
    with job_record(judged_answers) as record:
        judge_of = JudgesByCriterion(judges, checkpoints or {}, record)
        for name, source, target in (("answers", answers_path, judged_answers), ("code", code_path, judged_code)):
            table = pd.read_parquet(source)
            for criterion in JUDGED_COLUMNS[name]:
                judge = judge_of(criterion)
                table[criterion] = [
                    float("nan") if score is None else score
                    for score in judge.score_many(criterion, table["prompt"].tolist(), table["answer"].tolist())
                ]
                scored = int(table[criterion].notna().sum())
                log.info("%s / %s: %d of %d answers scored, mean %.1f", name, criterion, scored, len(table),
                         table[criterion].mean())
            write_parquet(table, target,
                          provenance("em_judge", {c: dict(judges[c]) for c in JUDGED_COLUMNS[name]}))


@dataclasses.dataclass
class JudgesByCriterion:
    """The configured judge of each criterion, built on first use; criteria with the same judge section
    share one judge (a local model is loaded once)."""

    judges: Mapping[str, Mapping[str, Any]]
    checkpoints: Mapping[str, Path]
    record: Any
    built: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, criterion: str) -> Any:
        if criterion not in self.judges:
            raise ConfigError(f"em.judges: no judge for criterion '{criterion}'")
        section = json.dumps(dict(self.judges[criterion]), sort_keys=True)
        if section not in self.built:
            self.built[section] = make_judge(with_checkpoint(self.judges[criterion], self.checkpoints), self.record)
        return self.built[section]


def em_judge_check(judges: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any], checkpoints: Mapping[str, Path],
                   scores_path: Path, summary_csv: Path, summary_md: Path, examples: Path) -> pd.DataFrame:
    """The configured `aligned` and `coherent` judges on the labelled answers (`caft.em.judge_check`):
    per-answer scores, the summary (AUROC, confusion at the paper's thresholds, mass on numbers) and a
    page of judged examples. Judge answers are kept in the job's record, so a killed job resumes."""
    labelled = load_labelled(builtin_file(cfg["labelled"], BUILTIN_LABELLED.name))
    with job_record(scores_path) as record:
        judge_of = JudgesByCriterion(judges, checkpoints, record)
        readings = {}
        for criterion in CHECKED:
            judge = judge_of(criterion)
            if not hasattr(judge, "read_many"):
                raise ConfigError(f"em.judges.{criterion}: a {judges[criterion].get('kind')} judge gives no number "
                                  "readings to check; the judge check needs an LLM judge (openai or local)")
            readings[criterion] = judge.read_many(criterion, labelled["question"].tolist(), labelled["answer"].tolist())
            scored = sum(reading.score is not None for reading in readings[criterion])
            log.info("%s: %d of %d labelled answers scored", criterion, scored, len(labelled))
        judged = judged_table(labelled, readings)
        table = summary(judged, {criterion: describe_judge(judges[criterion]) for criterion in CHECKED})
        for row in table.to_dict("records"):
            log.info("%s: AUROC %.3f over %d scored; TP %d FP %d FN %d TN %d", row["criterion"], row["auroc"],
                     row["scored"], row["true_positive"], row["false_positive"], row["false_negative"],
                     row["true_negative"])
        record_of = provenance("em_judge_check", {"judges": {c: dict(judges[c]) for c in CHECKED}, **cfg})
        write_parquet(judged, scores_path, record_of)
        with atomic_path(summary_csv) as tmp:
            table.to_csv(tmp, index=False)
        with atomic_path(summary_md) as tmp:
            tmp.write_text(summary_markdown(table), encoding="utf-8")
        with atomic_path(examples) as tmp:
            tmp.write_text(examples_html(judged, table, cfg["examples_per_kind"]), encoding="utf-8")
    return table


def describe_judge(section: Mapping[str, Any]) -> str:
    """A judge section in a few words, for tables: its kind and model."""
    return " ".join(str(part) for part in (section.get("kind"), section.get("model")) if part)


RUN_KEYS = ("model", "method", "selector", "seed")
UNSELECTED = ("base", "none")
"""Conditions without a selector; their runs live under ``{name}/{name}``."""
TABLE_RATES = (("misaligned_rate", "misaligned"), ("misaligned_among_coherent", "misaligned among coherent"),
               ("coherent_rate", "coherent"), ("vulnerable_rate", "vulnerable code"))


def em_table(answer_paths: list[Path], code_paths: list[Path], parquet: Path, csv: Path, markdown: Path,
             plot: Path) -> pd.DataFrame:
    """Misaligned and vulnerable rates per run, then mean ± SEM over seeds per (model, condition), and the
    paper's plot of misalignment against the vulnerable-code rate."""
    answers = pd.concat([pd.read_parquet(p) for p in answer_paths], ignore_index=True)
    code = pd.concat([pd.read_parquet(p) for p in code_paths], ignore_index=True)
    keys = list(RUN_KEYS)
    per_run = misalignment_summary(answers, keys).merge(vulnerable_summary(code, keys), on=keys, how="outer",
                                                        suffixes=("", "_code"))
    per_run["condition"] = [m if m in UNSELECTED else f"{m}/{s}" for m, s in zip(per_run["method"], per_run["selector"])]
    table = over_seeds(per_run, ["model", "condition"], RATES)
    table["label"] = [f"{m}: {c}" if table["model"].nunique() > 1 else c for m, c in zip(table["model"], table["condition"])]
    write_tables(table, table_markdown(table), parquet, csv, markdown,
                 provenance("em_table", {"runs": len(answer_paths)}))
    plot_misalignment_vs_vulnerable(table, plot, label="label")
    return table


def table_markdown(table: pd.DataFrame) -> str:
    """One line per (model, condition); cells "mean ± SEM" over seeds ("–" for one seed)."""
    header = ["model", "condition", "seeds", *(name for _, name in TABLE_RATES)]
    rows = ([row["model"], row["condition"], str(row["seeds"]),
             *(mean_sem(row[f"{rate}_mean"], row[f"{rate}_sem"], 3) for rate, _ in TABLE_RATES)]
            for row in table.to_dict("records"))
    return markdown_table(header, 2, rows,
                          "Rates over judged answers, mean ± standard error over seeds; n/a: no answer was scored.")
