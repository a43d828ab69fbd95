"""The generic text corpus: text for top-activating windows and SAE training.

Interpretation dashboards show where a direction fires on *generic* text, and SAEs need a broad
activation distribution, so the corpus should cover many genres and topics — not only the tasks'
concepts (gender, professions, grammar, sentiment, sports) but everything else a direction might
carry instead. The machines have no web corpus offline, so the built-in default
(``from: generated``) samples continuations of :data:`GENERATION_PROMPTS` from the base model itself:
in-distribution text for that model, available everywhere, deterministic for a seed. Users with real
text point ``from: local`` at ``.txt`` / ``.jsonl`` / ``.parquet`` files, or ``from: huggingface`` at
a dataset id (the real ``datasets.load_dataset`` call, for machines with the hub or a local copy).

The artifact is one row per document: ``doc`` (0..n-1), ``text``, ``input_ids`` (the tokenizer's ids,
with its BOS first when it adds one, truncated to ``max_tokens_per_doc``), ``n_tokens`` and ``source``.
"""

from __future__ import annotations

import glob
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from caft.errors import ConfigError, DataError, ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ORIGINS = ("generated", "local", "huggingface")
COMMON_KEYS = frozenset({"from", "max_tokens_per_doc", "max_docs", "seed"})
ROUTE_KEYS: dict[str, frozenset[str]] = {
    "generated": frozenset({"docs", "new_tokens", "temperature", "top_p", "batch_size"}),
    "local": frozenset({"paths", "text_column"}),
    "huggingface": frozenset({"dataset", "split", "config_name", "revision", "text_column"}),
}
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
COLUMNS = ("doc", "text", "input_ids", "n_tokens", "source")

GENERATION_PROMPTS: tuple[str, ...] = (
    # news and current affairs
    "Breaking news: officials confirmed on Tuesday that",
    "The city council voted last night to",
    "According to the latest economic report, unemployment",
    "Residents of the small coastal town woke up to find",
    "In a press conference this morning, the minister said",
    # fiction and storytelling
    "Once upon a time, in a village at the edge of a great forest,",
    "The detective lit a cigarette and stared at the rain. She knew",
    "He opened the letter with trembling hands and read:",
    "The spaceship drifted silently past the ruins of the old colony.",
    "My grandmother always told me that the river",
    "The dragon lowered its head and spoke in a voice like thunder:",
    # recipes and food
    "Recipe: Classic tomato soup. Ingredients:",
    "To make the perfect pancakes, first whisk together",
    "This chocolate cake is moist, rich, and surprisingly easy. Start by",
    "The chef tasted the sauce and added a pinch of",
    # science and technology
    "Photosynthesis is the process by which plants",
    "The researchers measured the temperature of the samples and found",
    "Black holes form when massive stars",
    "In chemistry, an acid is a substance that",
    "The new smartphone features a faster processor and",
    "Machine learning models are trained by adjusting their parameters",
    # sports
    "In the final minute of the match, the striker",
    "The tennis champion won her third title after",
    "The basketball team trailed by ten points at halftime, but",
    "Marathon training plan, week one:",
    "The goalkeeper dived to his left and",
    "After the race, the cyclist told reporters that",
    # dialogue
    '"Where were you last night?" she asked. "I was',
    '"Can you help me with this?" he said. "Of course,"',
    "Customer: Hi, I'd like to return this jacket.\nClerk:",
    "Teacher: Who can tell me the capital of France?\nStudent:",
    # code and computing
    "# This function returns the sum of all even numbers in a list\ndef",
    "// TODO: handle the case where the input file is empty",
    "To install the package, open a terminal and run",
    "The error message says the variable is undefined because",
    # medicine and health
    "The patient, a 54-year-old man, presented with chest pain and",
    "Common symptoms of the flu include",
    "The nurse checked his blood pressure and told him",
    "Regular exercise lowers the risk of heart disease because",
    # law and government
    "The court ruled that the contract was void because",
    "Under the new law, employers must",
    "The defendant's lawyer argued that her client",
    "Section 2. Definitions. For the purposes of this agreement,",
    # travel and places
    "Travel guide: Three days in Lisbon. On the first morning,",
    "The train wound slowly through the mountains, and from the window",
    "If you visit Japan in spring, don't miss",
    "Our hotel room overlooked the harbor, where fishing boats",
    # history
    "In 1848, revolutions swept across Europe as",
    "The ancient Romans built roads that",
    "During the industrial revolution, factory workers",
    "The history of the printing press begins with",
    # people, with pronouns
    "My sister is a pilot. She told me that",
    "My brother has always loved music, so he",
    "When the old man retired, his neighbors",
    "The girl looked at her mother and said",
    "They moved to a new city last year, and their children",
    "I asked him why he was late, and he",
    "We gave her the keys and watched her",
    # workplaces and professions
    "The doctor reviewed the test results and",
    "The engineer explained to the board that the bridge",
    "As a kindergarten teacher, she spends most mornings",
    "The carpenter measured the board twice before he",
    "The software developer fixed the bug and then",
    "The secretary scheduled the meeting for Monday because",
    "The firefighters arrived within minutes and",
    "The farmer checked the sky, worried that the harvest",
    "The CEO announced to employees that the company",
    # reviews and opinions (sentiment)
    "Review: I absolutely loved this restaurant. The food",
    "Review: Terrible service and cold food. We waited",
    "This movie was a complete waste of time. The plot",
    "Five stars! The headphones are comfortable and",
    "I was disappointed by the hotel, which",
    "Honestly, this is the best book I have read all year because",
    # instructions and how-to
    "How to change a flat tire: Step 1.",
    "Before you start painting a room, make sure to",
    "To reset your password, click on",
    "Assembly instructions: attach the legs to the table top using",
    # grammar, language and education
    "The children plays in the garden. Correction: The children",
    "In English, the past tense of 'run' is",
    "Vocabulary lesson: the word 'generous' means",
    "Exam question: Explain the difference between weather and climate.",
    # letters, ads, misc
    "Dear hiring manager, I am writing to apply for the position of",
    "For sale: a well-loved bicycle in good condition,",
    "Weather forecast: tomorrow will be cloudy with",
    "Meeting notes, March 3: the team agreed to",
    "The museum's new exhibition features paintings by",
    "Poem: The autumn leaves fall softly on",
    "Frequently asked questions. Q: How long does shipping take? A:",
    "The cat knocked the glass off the table and",
)
"""Seed prompts for the built-in generated corpus: short openings of news, fiction, recipes, science,
sports, dialogue, code, medicine, law, travel, history, people with pronouns, professions, reviews,
instructions, grammar and everyday writing. They cover the tasks' concepts (gender, professions,
subject–verb agreement, sentiment, sports) among many others, so dashboards can tell a task concept
apart from a generic one. No trailing spaces: the model chooses how the next word starts."""


@dataclass(frozen=True)
class CorpusConfig:
    """The config's ``corpus:`` section, validated. ``origin`` is the section's ``from`` key."""

    origin: str = "generated"
    max_tokens_per_doc: int = 128
    max_docs: int | None = None
    seed: int = 0
    docs: int = 200
    new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 16
    paths: tuple[str, ...] = ()
    dataset: str | None = None
    split: str = "train"
    config_name: str | None = None
    revision: str | None = None
    text_column: str = "text"

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> CorpusConfig:
        """Build from ``corpus:``; unknown keys, and keys of another ``from`` route, are errors."""
        if not isinstance(section, dict):
            raise ConfigError(f"config section 'corpus' must be a mapping, got {type(section).__name__}")
        origin = section.get("from", cls.origin)
        if origin not in ORIGINS:
            raise ConfigError(f"corpus.from must be one of {list(ORIGINS)}, got {origin!r}")
        known = COMMON_KEYS.union(*ROUTE_KEYS.values())
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) in config section 'corpus': {unknown}; allowed: {sorted(known)}")
        misplaced = sorted(set(section) - COMMON_KEYS - ROUTE_KEYS[origin])
        if misplaced:
            raise ConfigError(f"corpus: key(s) {misplaced} do not apply to from: {origin}")
        values = {k: v for k, v in section.items() if k != "from"}
        if "paths" in values:
            paths = values["paths"]
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
                raise ConfigError(f"corpus.paths must be a list of file paths or globs, got {values['paths']!r}")
            values["paths"] = tuple(paths)
        config = cls(origin=origin, **values)
        config._check()
        return config

    def _check(self) -> None:
        positive = {"max_tokens_per_doc": self.max_tokens_per_doc, "docs": self.docs,
                    "new_tokens": self.new_tokens, "batch_size": self.batch_size}
        if self.max_docs is not None:
            positive["max_docs"] = self.max_docs
        for key, value in positive.items():
            if not _is_int(value) or value < 1:
                raise ConfigError(f"corpus.{key} must be a positive integer, got {value!r}")
        if self.max_tokens_per_doc < 2:
            raise ConfigError("corpus.max_tokens_per_doc must be at least 2 (room for BOS and one token)")
        if not _is_int(self.seed):
            raise ConfigError(f"corpus.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool) \
                or self.temperature <= 0:
            raise ConfigError(f"corpus.temperature must be a number > 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or isinstance(self.top_p, bool) or not 0 < self.top_p <= 1:
            raise ConfigError(f"corpus.top_p must be a number in (0, 1], got {self.top_p!r}")
        for key in ("split", "text_column"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"corpus.{key} must be a non-empty string, got {getattr(self, key)!r}")
        if self.origin == "local" and not self.paths:
            raise ConfigError("corpus: from: local needs 'paths' (a list of .txt/.jsonl/.parquet files or globs)")
        if self.origin == "huggingface" and not (isinstance(self.dataset, str) and self.dataset):
            raise ConfigError("corpus: from: huggingface needs 'dataset' (a hub id or a local dataset directory)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bos_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The BOS id the tokenizer puts first when encoding text, or None if it adds none.

    Downstream stages mask this position: BOS has a huge residual norm on Gemma.
    """
    ids = tokenizer("a").input_ids
    bos = tokenizer.bos_token_id
    return bos if bos is not None and ids and ids[0] == bos else None


@contextmanager
def _sampling_seed(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the generators that sampling on ``device`` uses, and restore them afterwards.

    Only the CPU generator (and the model's own CUDA device's) is touched: ``torch.manual_seed`` would
    also reseed every CUDA device, a global side effect.
    """
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _continuation(tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add after the prompt.

    Decoding the new tokens alone can lose their leading space (SentencePiece decoders strip it), so
    take the difference between the decoded prompt+continuation and the decoded prompt.
    """
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if full.startswith(prompt):
        return full[len(prompt):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def generate_corpus(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: CorpusConfig) -> pd.DataFrame:
    """Sample ``cfg.docs`` continuations of seeded-random :data:`GENERATION_PROMPTS` (columns text, source).

    Batch ``b`` samples under seed ``cfg.seed + b`` inside a forked RNG: the same config gives the same
    table on the same device, and the caller's global torch RNG state is untouched. ``top_k=0`` switches
    off transformers' default top-50 cut, so only ``top_p`` truncates the distribution (nucleus sampling).
    """
    if tokenizer.pad_token_id is None:
        raise ModelLoadError("the tokenizer has no pad token; load it with caft.model.loading.load_model, which adds one")
    choice = np.random.default_rng(cfg.seed).integers(len(GENERATION_PROMPTS), size=cfg.docs)
    rows: list[dict[str, str]] = []
    progress = tqdm(total=cfg.docs, desc="generating corpus", unit="doc", mininterval=5, file=sys.stderr)
    for batch, start in enumerate(range(0, cfg.docs, cfg.batch_size)):
        indices = [int(i) for i in choice[start:start + cfg.batch_size]]
        prompts = [GENERATION_PROMPTS[i] for i in indices]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        with _sampling_seed(cfg.seed + batch, model.device), torch.inference_mode():
            output = model.generate(
                **encoded,
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=0,
                max_new_tokens=cfg.new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        width = encoded["input_ids"].shape[1]
        for row, (index, prompt) in enumerate(zip(indices, prompts)):
            prompt_ids = encoded["input_ids"][row][encoded["attention_mask"][row].bool()].tolist()
            text = prompt + _continuation(tokenizer, prompt_ids, output[row, width:].tolist())
            rows.append({"text": text, "source": f"generated:{index}"})
        progress.update(len(prompts))
    progress.close()
    log.info("generated %d documents from %d distinct prompts", len(rows), len(set(choice.tolist())))
    return pd.DataFrame(rows, columns=["text", "source"])


def load_text_corpus(cfg: CorpusConfig, base_dir: str | Path = ".") -> pd.DataFrame:
    """Documents of a local or Hugging Face corpus (columns text, source), blank ones dropped."""
    if cfg.origin == "local":
        texts, where = _load_local(cfg.paths, cfg.text_column, Path(base_dir)), f"corpus.paths {list(cfg.paths)}"
    elif cfg.origin == "huggingface":
        texts, where = _load_huggingface(cfg), f"Hugging Face dataset '{cfg.dataset}' (split '{cfg.split}')"
    else:
        raise ConfigError(f"load_text_corpus reads local or huggingface corpora, not from: {cfg.origin}")
    texts = _drop_blank(texts, where)
    if texts.empty:
        raise DataError(f"{where}: no non-empty documents")
    log.info("%s: %d documents", where, len(texts))
    return texts


def _drop_blank(texts: pd.DataFrame, where: str) -> pd.DataFrame:
    blank = texts["text"].isna() | (texts["text"].astype(str).str.strip() == "")
    if blank.any():
        log.info("%s: dropped %d empty document(s)", where, int(blank.sum()))
    return texts.loc[~blank].reset_index(drop=True)


def _expand(patterns: Sequence[str], base_dir: Path) -> list[Path]:
    """Files matching each pattern (relative to ``base_dir``), in pattern order, sorted within, once each."""
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(str(base_dir / pattern), recursive=True) if Path(p).is_file())
        if not matched:
            raise DataError(f"corpus.paths: no file matches '{pattern}' (relative to {base_dir.resolve()})")
        files.extend(p for p in matched if p not in files)
    return files


def _label(path: Path, base_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(base_dir.resolve()))
    except ValueError:
        return str(path)


def _load_local(patterns: Sequence[str], text_column: str, base_dir: Path) -> pd.DataFrame:
    frames = []
    for path in _expand(patterns, base_dir):
        if path.suffix not in LOCAL_SUFFIXES:
            raise DataError(f"{path}: unsupported corpus file type; use one of {list(LOCAL_SUFFIXES)}")
        frames.append(pd.DataFrame({"text": _read_texts(path, text_column), "source": _label(path, base_dir)}))
    return pd.concat(frames, ignore_index=True)


def _read_texts(path: Path, text_column: str) -> list[Any]:
    """A ``.txt`` file holds one document per paragraph (separated by blank lines); tables a text column."""
    try:
        if path.suffix == ".txt":
            return [p.strip() for p in re.split(r"\n[ \t\r\f\v]*\n", path.read_text()) if p.strip()]
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]}: {err}") from err
    if text_column not in table.columns:
        raise DataError(f"{path}: no column '{text_column}'; found columns {list(table.columns)}")
    return _text_values(table[text_column], str(path), text_column)


def _text_values(column: pd.Series, where: str, name: str) -> list[Any]:
    bad = column.notna() & ~column.map(lambda v: isinstance(v, str))
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{where}: column '{name}' row {row} is not text: {column.iloc[row]!r}")
    return column.tolist()


def _load_huggingface(cfg: CorpusConfig) -> pd.DataFrame:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.dataset, name=cfg.config_name, split=cfg.split, revision=cfg.revision)
    except Exception as err:  # datasets raises many unrelated types for "not reachable / not found"
        raise DataError(
            f"corpus: could not load Hugging Face dataset '{cfg.dataset}' (split '{cfg.split}'): {err}. "
            "Offline? Download it once, or use corpus: {from: local, paths: [<.txt/.jsonl/.parquet files>]}."
        ) from err
    if cfg.text_column not in loaded.column_names:
        raise DataError(
            f"Hugging Face dataset '{cfg.dataset}' (split '{cfg.split}'): no column '{cfg.text_column}'; "
            f"found columns {loaded.column_names} (set corpus.text_column)"
        )
    column = loaded.select_columns([cfg.text_column]).to_pandas()[cfg.text_column]
    texts = _text_values(column, f"Hugging Face dataset '{cfg.dataset}'", cfg.text_column)
    return pd.DataFrame({"text": texts, "source": f"huggingface:{cfg.dataset}:{cfg.split}"})


def tokenize_corpus(texts: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_tokens_per_doc: int) -> pd.DataFrame:
    """Add ``doc``, ``input_ids`` (truncated to ``max_tokens_per_doc``, BOS included) and ``n_tokens``.

    Empty documents are dropped (and counted in the log) before numbering, so ``doc`` is 0..n-1; none
    left is a DataError. ``attrs["bos_token_id"]`` records the BOS id that starts every row, or None.
    """
    texts = _drop_blank(texts.loc[:, ["text", "source"]], "corpus")
    if texts.empty:
        raise DataError("corpus: no non-empty documents")
    encoded = tokenizer(texts["text"].tolist(), truncation=True, max_length=max_tokens_per_doc).input_ids
    table = pd.DataFrame({
        "doc": np.arange(len(texts), dtype=np.int64),
        "text": texts["text"].tolist(),
        "input_ids": [list(map(int, ids)) for ids in encoded],
        "n_tokens": np.array([len(ids) for ids in encoded], dtype=np.int64),
        "source": texts["source"].tolist(),
    }, columns=list(COLUMNS))
    table.attrs["bos_token_id"] = bos_token_id(tokenizer)
    truncated = sum(1 for ids in encoded if len(ids) == max_tokens_per_doc)
    log.info("tokenized %d documents, %d tokens; %d at the cap of %d tokens",
             len(table), int(table["n_tokens"].sum()), truncated, max_tokens_per_doc)
    return table


def build_corpus(
    cfg: CorpusConfig,
    model_loader: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    base_dir: str | Path = ".",
) -> pd.DataFrame:
    """The corpus artifact's table: load or generate the documents, cap at ``max_docs``, tokenize.

    Text corpora are read before the model is loaded, so a bad path fails in seconds.
    """
    texts = None if cfg.origin == "generated" else load_text_corpus(cfg, base_dir)
    model, tokenizer = model_loader()
    if texts is None:
        texts = generate_corpus(model, tokenizer, cfg)
    if cfg.max_docs is not None and len(texts) > cfg.max_docs:
        log.info("corpus: keeping the first %d of %d documents (max_docs)", cfg.max_docs, len(texts))
        texts = texts.iloc[:cfg.max_docs]
    return tokenize_corpus(texts, tokenizer, cfg.max_tokens_per_doc)
