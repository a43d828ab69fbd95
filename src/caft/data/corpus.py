"""The generic text corpus: text for top-activating windows and SAE training.

Interpretation dashboards show where a direction fires on *generic* text, and SAEs need a broad
activation distribution, so the corpus should be real text of many genres and topics — not only the
tasks' concepts (gender, professions, grammar, sentiment, sports) but everything else a direction might
carry instead. ``corpus.sources`` lists where it comes from, in order: ``wikipedia`` and ``brown``
(real English text read from registry packages, :mod:`caft.data.packaged_text`), ``local`` (a user's
``.txt`` / ``.jsonl`` / ``.parquet`` files or folders), ``huggingface`` (the real
``datasets.load_dataset`` call, for machines with the hub or a local copy) and ``generated``
(continuations of :func:`generation_prompts` sampled from the base model: available everywhere, but
the model's own text, and small).

Documents repeated in an earlier source are dropped, each document is split into near-equal pieces of
at most ``max_tokens_per_doc`` tokens (pieces repeated elsewhere dropped), and a seeded sample keeps
each source under its own ``max_tokens`` and the corpus under ``corpus.max_tokens``. The artifact is one
row per piece: ``doc`` (0..n-1), ``text`` (the piece), ``input_ids`` (the tokenizer's ids, with its BOS
first when it adds one), ``n_tokens``, ``source`` (where the document came from) and ``piece`` (its
index within the document); its provenance lists each source's digests and token counts.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from caft.data.packaged_text import PACKAGE_DIR, PACKAGES, brown_documents, wikipedia_documents
from caft.errors import ConfigError, DataError, ModelLoadError

if TYPE_CHECKING:  # torch only where text is generated: the workflow reads this config while it is parsed
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
COLUMNS = ("doc", "text", "input_ids", "n_tokens", "source", "piece")

PROMPTS_FILE = "generation_prompts.json"
"""Package data beside this module: the generation prompts, as ``{genre: [prompt, ...]}``."""
PACKAGE_DATA = ("generation_prompts.json",)
"""The files this module reads (`caft.tracking`: an edit reruns the rules that use it)."""


@cache
def generation_prompts() -> tuple[str, ...]:
    """Seed prompts for the built-in generated corpus, every genre's in file order.

    Short openings of news, fiction, recipes, science, sports, dialogue, code, medicine, law, travel,
    history, people with pronouns, professions, reviews, instructions, grammar and everyday writing.
    They cover the tasks' concepts (gender, professions, subject–verb agreement, sentiment, sports)
    among many others, so dashboards can tell a task concept apart from a generic one. No trailing
    spaces: the model chooses how the next word starts. A ``generated:<i>`` document continues
    prompt ``i`` of this tuple, so the file's order is part of the corpus's identity.
    """
    genres = json.loads(files(__package__).joinpath(PROMPTS_FILE).read_text(encoding="utf-8"))
    return tuple(prompt for prompts in genres.values() for prompt in prompts)


@dataclass(frozen=True)
class SourceConfig:
    """One entry of ``corpus.sources`` (checked by config/schema.yaml, which also holds the defaults):
    ``origin`` is its ``from`` key and says which keys apply; ``max_tokens`` caps what this source
    contributes (after splitting and deduplication; None: no cap of its own)."""

    origin: str
    max_tokens: int | None = None
    path: str | None = None
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
    def from_config(cls, section: Mapping[str, Any]) -> SourceConfig:
        """Build from one ``corpus.sources`` entry."""
        values = {key: value for key, value in section.items() if key != "from"}
        if "paths" in values:
            values["paths"] = tuple(values["paths"])
        return cls(origin=section["from"], **values)

    @property
    def package_file(self) -> str | None:
        """The package file a packaged source reads: its ``path``, else the workflow's download."""
        if self.origin not in PACKAGES:
            return None
        return self.path or f"{PACKAGE_DIR}/{PACKAGES[self.origin].file}"


@dataclass(frozen=True)
class CorpusConfig:
    """The config's ``corpus:`` section (checked by config/schema.yaml): the sources, in order, and how
    they become pieces."""

    sources: tuple[SourceConfig, ...] = (SourceConfig("generated"),)
    max_tokens: int | None = 250_000
    max_tokens_per_doc: int = 128
    seed: int = 0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> CorpusConfig:
        """Build from ``corpus:``."""
        values = dict(section)
        if "sources" in values:
            values["sources"] = tuple(SourceConfig.from_config(source) for source in values["sources"])
        return cls(**values)

    def input_files(self, base_dir: str | Path = ".") -> list[str]:
        """The files the sources read, so that a changed one reruns the corpus: package files (downloaded
        by the workflow unless a source names its own `path`) and local files."""
        files = [s.package_file for s in self.sources if s.package_file]
        for source in self.sources:
            if source.origin == "local":
                files += [str(path) for path in _expand(source.paths, Path(base_dir), missing_ok=True)]
        return files


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
    import torch

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


def generate_corpus(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: SourceConfig,
                    seed: int) -> pd.DataFrame:
    """Sample ``cfg.docs`` continuations of seeded-random :func:`generation_prompts` (columns text, source).

    Batch ``b`` samples under seed ``seed + b`` inside a forked RNG: the same config gives the same
    table on the same device, and the caller's global torch RNG state is untouched. ``top_k=0`` switches
    off transformers' default top-50 cut, so only ``top_p`` truncates the distribution (nucleus sampling).
    """
    if tokenizer.pad_token_id is None:
        raise ModelLoadError("the tokenizer has no pad token; load it with caft.model.loading.load_model, which adds one")
    import torch

    all_prompts = generation_prompts()
    choice = np.random.default_rng(seed).integers(len(all_prompts), size=cfg.docs)
    rows: list[dict[str, str]] = []
    progress = tqdm(total=cfg.docs, desc="generating corpus", unit="doc", mininterval=5, file=sys.stderr)
    for batch, start in enumerate(range(0, cfg.docs, cfg.batch_size)):
        indices = [int(i) for i in choice[start:start + cfg.batch_size]]
        prompts = [all_prompts[i] for i in indices]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        with _sampling_seed(seed + batch, model.device), torch.inference_mode():
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


def load_text_corpus(cfg: SourceConfig, base_dir: str | Path = ".") -> tuple[pd.DataFrame, dict[str, str]]:
    """Documents of a packaged, local or Hugging Face source (columns text, source), blank ones dropped,
    and the digests of what was read (sha256 per file; a dataset's fingerprint)."""
    base_dir = Path(base_dir)
    if cfg.origin in PACKAGES:
        path = base_dir / cfg.package_file
        if not path.is_file():
            raise DataError(f"corpus source '{cfg.origin}': no file {path} ({PACKAGES[cfg.origin].requirement}; "
                            "the corpus_package rule downloads it)")
        reader = wikipedia_documents if cfg.origin == "wikipedia" else brown_documents
        texts, where = reader(path), f"{PACKAGES[cfg.origin].requirement} ({cfg.package_file})"
        digests = {cfg.package_file: PACKAGES[cfg.origin].sha256}
    elif cfg.origin == "local":
        files = _expand(cfg.paths, base_dir)
        texts, where = _load_local(files, cfg.text_column, base_dir), f"corpus paths {list(cfg.paths)}"
        digests = {_label(f, base_dir): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    elif cfg.origin == "huggingface":
        texts, fingerprint = _load_huggingface(cfg)
        where, digests = f"Hugging Face dataset '{cfg.dataset}' (split '{cfg.split}')", {"fingerprint": fingerprint}
    else:
        raise ConfigError(f"load_text_corpus reads text sources, not from: {cfg.origin}")
    texts = _drop_blank(texts, where)
    if texts.empty:
        raise DataError(f"{where}: no non-empty documents")
    log.info("%s: %d documents", where, len(texts))
    return texts, digests


def _drop_blank(texts: pd.DataFrame, where: str) -> pd.DataFrame:
    blank = texts["text"].isna() | (texts["text"].astype(str).str.strip() == "")
    if blank.any():
        log.info("%s: dropped %d empty document(s)", where, int(blank.sum()))
    return texts.loc[~blank].reset_index(drop=True)


def _expand(patterns: Sequence[str], base_dir: Path, missing_ok: bool = False) -> list[Path]:
    """Files matching each pattern (relative to ``base_dir``; a folder means its corpus files, recursively),
    in pattern order, sorted within, once each."""
    files: list[Path] = []
    for pattern in patterns:
        folder = (base_dir / pattern).is_dir()
        found = glob.glob(str(base_dir / pattern / "**" / "*" if folder else base_dir / pattern), recursive=True)
        matched = sorted(Path(p) for p in found if Path(p).is_file() and (not folder or Path(p).suffix in LOCAL_SUFFIXES))
        if not matched and not missing_ok:
            raise DataError(f"corpus.paths: no file matches '{pattern}' (relative to {base_dir.resolve()})")
        files.extend(p for p in matched if p not in files)
    return files


def _label(path: Path, base_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(base_dir.resolve()))
    except ValueError:
        return str(path)


def _load_local(files: Sequence[Path], text_column: str, base_dir: Path) -> pd.DataFrame:
    frames = []
    for path in files:
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


def _load_huggingface(cfg: SourceConfig) -> tuple[pd.DataFrame, str]:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.dataset, name=cfg.config_name, split=cfg.split, revision=cfg.revision)
    except Exception as err:  # datasets raises many unrelated types for "not reachable / not found"
        raise DataError(
            f"corpus: could not load Hugging Face dataset '{cfg.dataset}' (split '{cfg.split}'): {err}. "
            "Offline? Download it once, or use a source {from: local, paths: [<.txt/.jsonl/.parquet files>]}."
        ) from err
    if cfg.text_column not in loaded.column_names:
        raise DataError(
            f"Hugging Face dataset '{cfg.dataset}' (split '{cfg.split}'): no column '{cfg.text_column}'; "
            f"found columns {loaded.column_names} (set corpus.text_column)"
        )
    column = loaded.select_columns([cfg.text_column]).to_pandas()[cfg.text_column]
    texts = _text_values(column, f"Hugging Face dataset '{cfg.dataset}'", cfg.text_column)
    return pd.DataFrame({"text": texts, "source": f"huggingface:{cfg.dataset}:{cfg.split}"}), loaded._fingerprint


def split_into_pieces(ids: list[int], max_len: int) -> list[list[int]]:
    """A document's tokens in the fewest near-equal pieces of at most `max_len` tokens: no short tail
    piece, and every window of a piece is running text."""
    count = -(-len(ids) // max_len)
    bounds = [i * len(ids) // count for i in range(count + 1)]
    return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def tokenize_corpus(texts: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_tokens_per_doc: int) -> pd.DataFrame:
    """One row per piece of each document: ``doc`` (0..n-1), ``text`` (the piece decoded), ``input_ids``
    (BOS first when the tokenizer adds one, at most ``max_tokens_per_doc`` in all), ``n_tokens``,
    ``source``, ``piece``. Long documents are split (`split_into_pieces`), not truncated; pieces equal to
    an earlier one are dropped (a repeated boilerplate line, a document in two sources).

    Empty documents are dropped (and counted in the log) first; none left is a DataError.
    ``attrs["bos_token_id"]`` records the BOS id that starts every row, or None.
    """
    texts = _drop_blank(texts, "corpus")
    if texts.empty:
        raise DataError("corpus: no non-empty documents")
    bos = bos_token_id(tokenizer)
    prefix = [] if bos is None else [bos]
    encoded = tokenizer(texts["text"].tolist(), add_special_tokens=False).input_ids
    seen: set[tuple[int, ...]] = set()
    rows, duplicates = [], 0
    for document, ids in enumerate(encoded):
        for index, piece in enumerate(split_into_pieces(list(map(int, ids)), max_tokens_per_doc - len(prefix))):
            if tuple(piece) in seen:
                duplicates += 1
                continue
            seen.add(tuple(piece))
            rows.append((tokenizer.decode(piece), prefix + piece, document, index))
    documents = np.array([r[2] for r in rows], dtype=np.int64)
    table = pd.DataFrame({
        "doc": np.arange(len(rows), dtype=np.int64),
        "text": [r[0] for r in rows],
        "input_ids": [r[1] for r in rows],
        "n_tokens": np.array([len(r[1]) for r in rows], dtype=np.int64),
        "source": texts["source"].to_numpy()[documents],
        "piece": np.array([r[3] for r in rows], dtype=np.int64),
    }, columns=list(COLUMNS))
    for column in texts.columns.difference(["text", "source"]):  # per-document columns follow their pieces
        table[column] = texts[column].to_numpy()[documents]
    table.attrs["bos_token_id"] = bos
    log.info("tokenized %d documents into %d pieces of at most %d tokens (%d tokens); %d duplicate pieces dropped",
             len(texts), len(table), max_tokens_per_doc, int(table["n_tokens"].sum()), duplicates)
    return table


def sample_pieces(table: pd.DataFrame, caps: Sequence[int | None], cap: int | None, seed: int) -> pd.DataFrame:
    """Seeded sample of pieces under each source's token cap (``caps[i]`` for rows with ``group == i``),
    then the corpus's; kept rows stay in source order and are renumbered. The shuffle is one
    ``numpy.random.default_rng([seed, i])`` per source and ``default_rng([seed, len(caps)])`` overall."""
    kept = []
    for group, source_cap in enumerate(caps):
        rows = table.index[table["group"] == group].to_numpy()
        if source_cap is not None:
            rows = _under_cap(np.random.default_rng([seed, group]).permutation(rows), table["n_tokens"], source_cap)
        kept.append(rows)
    rows = np.concatenate(kept)
    if cap is not None:
        rows = _under_cap(np.random.default_rng([seed, len(caps)]).permutation(rows), table["n_tokens"], cap)
    sampled = table.loc[np.sort(rows)].reset_index(drop=True)
    sampled["doc"] = np.arange(len(sampled), dtype=np.int64)
    sampled.attrs = dict(table.attrs)
    return sampled


def _under_cap(order: np.ndarray, n_tokens: pd.Series, cap: int) -> np.ndarray:
    """The longest prefix of `order` whose pieces hold at most `cap` tokens."""
    return order[np.cumsum(n_tokens.to_numpy()[order]) <= cap]


def build_corpus(
    cfg: CorpusConfig,
    model_loader: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    base_dir: str | Path = ".",
) -> pd.DataFrame:
    """The corpus artifact's table: each source's documents (text sources are read before the model is
    loaded, so a bad path fails in seconds), documents repeated in an earlier source dropped, split into
    pieces, and sampled under the caps. ``attrs["sources"]`` records per source its ``from``, digests,
    documents and tokens available and kept."""
    read = [None if s.origin == "generated" else load_text_corpus(s, base_dir) for s in cfg.sources]
    model, tokenizer = model_loader()
    frames, records = [], []
    for group, (source, loaded) in enumerate(zip(cfg.sources, read)):
        texts, digests = loaded if loaded is not None else (generate_corpus(model, tokenizer, source, cfg.seed), {})
        frames.append(texts.assign(group=group))
        records.append({"from": source.origin, "digests": digests, "documents": len(texts)})
    texts = pd.concat(frames, ignore_index=True)
    normalized = texts["text"].astype(str).str.split().str.join(" ")
    repeated = normalized.duplicated()
    if repeated.any():
        log.info("corpus: dropped %d document(s) repeated in an earlier place or source", int(repeated.sum()))
    texts = texts.loc[~repeated].reset_index(drop=True)
    table = tokenize_corpus(texts, tokenizer, cfg.max_tokens_per_doc)
    sampled = sample_pieces(table, [s.max_tokens for s in cfg.sources], cfg.max_tokens, cfg.seed)
    for group, record in enumerate(records):
        record["tokens_available"] = int(table.loc[table["group"] == group, "n_tokens"].sum())
        record["tokens_kept"] = int(sampled.loc[sampled["group"] == group, "n_tokens"].sum())
        log.info("corpus source %d (%s): %d documents, %d tokens available, %d kept", group, record["from"],
                 record["documents"], record["tokens_available"], record["tokens_kept"])
    sampled = sampled.drop(columns="group")
    sampled.attrs["sources"] = records
    return sampled

