"""Top-activating token windows of candidate directions or latents on a text corpus.

Two independent halves:

- *where activations come from*: `latent_activations` runs the **base** model over the corpus and
  applies a score function ``score_fn(layer, residual [B, T, d]) -> activations [B, T, m]`` to the
  residual stream (the output of block L). `projection_scores` builds one for PCs (dot product with
  unit directions); an SAE encoder fits the same signature.
- *windows*: `top_windows` splits every document into non-overlapping windows (16 tokens, as the
  reference) and keeps, per (layer, latent, sign), the windows with the largest maximum ("positive")
  and the most negative minimum ("negative"). PC signs are arbitrary, so both ends are shown;
  SAE latents (non-negative) need only ``signs=("positive",)``. Optionally it also keeps a uniform
  random sample of all windows per latent (sign "random"): simulation scoring needs windows where the
  latent is weak too, or an explanation that predicts "always high" would score well.

It streams: only the running top windows are kept (memory O(latents × per_component × window)),
never the corpus' activations. BOS and padding are masked (NaN) and never score a window. Ties are
broken by (doc, start), and the random sample keeps the windows with the smallest keys drawn from
``numpy.random.default_rng([seed, layer, doc])``, so results do not depend on batch size or order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from caft.config import SectionConfig
from caft.errors import ConfigError, DataError
from caft.model.hooks import capture_residuals, check_layers, run_decoder
from caft.model.prompts import token_mask

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ScoreFn = Callable[[int, torch.Tensor], torch.Tensor]
"""(layer, residual [B, T, d] float32) -> activations [B, T, m]."""

SIGNS: tuple[str, ...] = ("positive", "negative")
RANDOM = "random"
"""The sign of the uniformly sampled windows (`top_windows`' ``random_per_component``)."""
QUANTILE = "quantile"
"""The sign of the windows below the top, one per band of peak (`top_windows`' ``quantile_per_component``)."""
POOL_PER_QUANTILE = 10
"""Activating windows drawn uniformly per quantile window, among which the bands are cut."""
WINDOW_COLUMNS = ("layer", "component", "sign", "rank", "doc", "start", "token_ids", "tokens", "values", "peak")


@dataclass(frozen=True)
class WindowsConfig(SectionConfig):
    """The `windows` section: window length, how many top and uniformly drawn windows per candidate."""

    SECTION: ClassVar[str] = "windows"

    window: int
    per_component: int
    random_per_component: int
    seed: int
    batch_size: int
    profile_sample: int = 8192
    quantile_per_component: int = 4
    task_examples: int = 3
    logit_tokens: int = 8


@dataclass(frozen=True)
class ActivationBatch:
    """Activations of a batch of documents, right-padded to T tokens.

    ``values[layer]`` is [B, T, m] float32, NaN at BOS and padding; ``docs`` are the documents'
    indices in the corpus, ``lengths`` their token counts.
    """

    docs: np.ndarray
    lengths: np.ndarray
    input_ids: np.ndarray
    values: dict[int, np.ndarray]


def projection_scores(directions: Mapping[int, torch.Tensor]) -> ScoreFn:
    """Score = coordinate of the residual along each direction (columns of [d, m], normalised here)."""
    unit: dict[int, torch.Tensor] = {}
    for layer, vectors in directions.items():
        if vectors.ndim != 2 or not torch.isfinite(vectors).all():
            raise ConfigError(f"layer {layer}: directions must be a finite [d, m] matrix, got {tuple(vectors.shape)}")
        norms = vectors.float().norm(dim=0)
        if (norms == 0).any():
            raise ConfigError(f"layer {layer}: a direction is the zero vector")
        unit[layer] = vectors.float() / norms

    def score(layer: int, residual: torch.Tensor) -> torch.Tensor:
        return residual @ unit[layer].to(residual.device)

    return score


def sae_scores(saes: Mapping[int, Any], latents: Mapping[int, Sequence[int]]) -> ScoreFn:
    """Score = the activations of the given latents of each layer's SAE (columns in `latents` order)."""
    ids = {layer: torch.as_tensor(list(latents[layer]), dtype=torch.long) for layer in latents}
    missing = sorted(set(ids) - set(saes))
    if missing:
        raise ConfigError(f"no SAE for layer(s) {missing}")

    def score(layer: int, residual: torch.Tensor) -> torch.Tensor:
        sae = saes[layer]
        with torch.autocast(residual.device.type, enabled=False):
            z = sae.encode(residual.to(sae.W_dec.device, torch.float32))
        return (z.to_dense() if z.is_sparse else z)[..., ids[layer].to(z.device)]

    return score


def latent_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    docs_input_ids: Sequence[Sequence[int]],
    score_fn: ScoreFn,
    layers: Sequence[int],
    batch_size: int,
    progress: bool = False,
) -> Iterator[ActivationBatch]:
    """Run the model over the documents (token ids as the model should see them, BOS first) in batches.

    Right padding: every real token sits at its document position, unaffected by the batch's padding.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    empty = [index for index, ids in enumerate(docs_input_ids) if len(ids) == 0]
    if empty:
        raise DataError(f"corpus documents {empty[:10]} have no tokens")
    layers = check_layers(model, layers)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with tqdm(total=len(docs_input_ids), desc="corpus activations", unit="doc", file=sys.stderr,
              disable=not progress) as bar:
        for first in range(0, len(docs_input_ids), batch_size):
            chunk = docs_input_ids[first : first + batch_size]
            lengths = torch.tensor([len(ids) for ids in chunk])
            input_ids = torch.full((len(chunk), int(lengths.max())), pad_id, dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
            mask = token_mask(
                {"input_ids": input_ids, "attention_mask": attention_mask}, False, tokenizer.bos_token_id
            )
            # hooks and inference mode only around the forward: nothing leaks to the consumer between yields
            with torch.inference_mode(), capture_residuals(model, layers) as residuals:
                run_decoder(model, input_ids, attention_mask, stop_after=layers[-1])
                values = {layer: _scores(score_fn, layer, residuals[layer], mask) for layer in layers}
            yield ActivationBatch(
                docs=np.arange(first, first + len(chunk)),
                lengths=lengths.numpy(),
                input_ids=input_ids.numpy(),
                values=values,
            )
            bar.update(len(chunk))


def residual_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    docs_input_ids: Sequence[Sequence[int]],
    layers: Sequence[int],
    batch_size: int,
    progress: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Block outputs of every real corpus token (BOS and padding dropped), batch by batch: (layer, [n, d])."""
    def identity(layer: int, residual: torch.Tensor) -> torch.Tensor:
        return residual

    for batch in latent_activations(model, tokenizer, docs_input_ids, identity, layers, batch_size, progress):
        for layer, values in batch.values.items():
            flat = values.reshape(-1, values.shape[-1])
            yield layer, flat[~np.isnan(flat[:, 0])]


def _scores(score_fn: ScoreFn, layer: int, residual: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``score_fn`` output as float32 numpy [B, T, m], NaN where ``mask`` [B, T] is False."""
    scores = score_fn(layer, residual).float().cpu()
    if scores.ndim != 3 or scores.shape[:2] != mask.shape:
        raise ConfigError(
            f"layer {layer}: the score function returned shape {tuple(scores.shape)}; "
            f"expected [{mask.shape[0]}, {mask.shape[1]}, m]"
        )
    return scores.masked_fill(~mask[..., None], float("nan")).numpy()


def component_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    docs_input_ids: Sequence[Sequence[int]],
    layers: Sequence[int],
    directions: Mapping[int, torch.Tensor],
    batch_size: int,
    progress: bool = False,
) -> Iterator[ActivationBatch]:
    """`latent_activations` of PCs (or any directions): the base residual's coordinate along each."""
    missing = sorted(set(layers) - set(directions))
    if missing:
        raise ConfigError(f"no directions for layer(s) {missing}")
    score_fn = projection_scores({layer: directions[layer] for layer in layers})
    return latent_activations(model, tokenizer, docs_input_ids, score_fn, layers, batch_size, progress)


class _RunningTop:
    """The best ``k`` windows of every latent of one (layer, sign), by key desc, then (doc, start)."""

    def __init__(self, m: int, k: int, window: int) -> None:
        self.key = np.full((m, k), -np.inf)
        self.doc = np.full((m, k), np.iinfo(np.int64).max, dtype=np.int64)
        self.start = np.zeros((m, k), dtype=np.int64)
        self.length = np.zeros((m, k), dtype=np.int64)
        self.values = np.full((m, k, window), np.nan, dtype=np.float32)
        self.token_ids = np.zeros((m, k, window), dtype=np.int64)

    def push(self, key: np.ndarray, doc: np.ndarray, start: np.ndarray, length: np.ndarray,
             values: np.ndarray, token_ids: np.ndarray) -> None:
        """Merge N candidate windows: key [N, m], values [N, window, m], the rest [N] / [N, window]."""
        m, k = self.key.shape
        n = key.shape[0]
        all_key = np.concatenate([self.key, key.T], axis=1)
        all_doc = np.concatenate([self.doc, np.broadcast_to(doc, (m, n))], axis=1)
        all_start = np.concatenate([self.start, np.broadcast_to(start, (m, n))], axis=1)
        best = np.lexsort((all_start, all_doc, -all_key), axis=-1)[:, :k]
        kept = best < k
        old = np.where(kept, best, 0)
        new = np.where(kept, 0, best - k)
        rows = np.arange(m)[:, None]
        self.values = np.where(
            kept[..., None], self.values[rows, old], values.transpose(2, 0, 1)[rows, new]
        )
        self.token_ids = np.where(kept[..., None], self.token_ids[rows, old], token_ids[new])
        self.length = np.where(kept, self.length[rows, old], length[new])
        self.key = all_key[rows, best]
        self.doc = all_doc[rows, best]
        self.start = all_start[rows, best]


def _windows(batch: ActivationBatch, window: int) -> tuple[np.ndarray, ...]:
    """Cut a batch into windows: docs [N], starts [N], lengths [N], token ids [N, window], and the
    per-layer values [N, window, m] — only windows that begin inside their document."""
    n_docs, width = batch.input_ids.shape
    per_doc = -(-width // window)
    padded = per_doc * window
    ids = np.zeros((n_docs, padded), dtype=np.int64)
    ids[:, :width] = batch.input_ids
    starts = np.tile(np.arange(per_doc) * window, n_docs)
    lengths = np.clip(np.repeat(batch.lengths, per_doc) - starts, 0, window)
    inside = lengths > 0
    values = {}
    for layer, layer_values in batch.values.items():
        m = layer_values.shape[2]
        full = np.full((n_docs, padded, m), np.nan, dtype=np.float32)
        full[:, :width] = layer_values
        values[layer] = full.reshape(n_docs * per_doc, window, m)[inside]
    return (
        np.repeat(batch.docs, per_doc)[inside],
        starts[inside],
        lengths[inside],
        ids.reshape(n_docs * per_doc, window)[inside],
        values,
    )


def top_windows(
    activations: Iterable[ActivationBatch],
    tokenizer: PreTrainedTokenizerBase,
    window: int = 16,
    per_component: int = 8,
    signs: Sequence[str] = SIGNS,
    random_per_component: int = 0,
    seed: int = 0,
    quantile_per_component: int = 0,
) -> pd.DataFrame:
    """The top ``per_component`` windows per (layer, component, sign), one row each, plus
    ``random_per_component`` windows per (layer, component) drawn uniformly without replacement from all
    windows with an unmasked token (sign "random", ranked by their random key; seeded by ``seed``), plus
    ``quantile_per_component`` windows spanning the activating ones (sign "quantile"): of a uniform
    sample of `POOL_PER_QUANTILE` × as many windows whose peak is above 0, the ones at evenly spaced
    ranks of their peak, rank 0 the weakest — examples from the lower quantiles, as simulation scoring
    and dashboards need beside the top.

    Columns: `layer`, `component` (column of the score function's output), `sign`, `rank` (0 = best),
    `doc`, `start`, `token_ids`, `tokens` (each id decoded alone), `values` (NaN where masked), `peak`
    (the window's max for "positive" and "random", min for "negative"). Windows are ``window`` tokens,
    shorter at a document's end; windows with no unmasked token are never kept, nor "positive"
    ("negative") windows whose peak is not above (below) 0, so a direction may have fewer top windows.
    """
    if window < 1 or per_component < 1:
        raise ConfigError(f"window and per_component must be positive, got {window} and {per_component}")
    unknown = set(signs) - set(SIGNS)
    if unknown or not signs:
        raise ConfigError(f"signs must be a non-empty subset of {SIGNS}, got {list(signs)}")
    if not _is_count(random_per_component) or not _is_count(seed) or not _is_count(quantile_per_component):
        raise ConfigError(
            "random_per_component, quantile_per_component and seed must be non-negative integers, got "
            f"{random_per_component!r}, {quantile_per_component!r} and {seed!r}"
        )
    sizes = {sign: per_component for sign in signs}
    if random_per_component:
        sizes[RANDOM] = random_per_component
    if quantile_per_component:
        sizes[QUANTILE] = POOL_PER_QUANTILE * quantile_per_component
    tops: dict[tuple[int, str], _RunningTop] = {}
    for batch in activations:
        docs, starts, lengths, token_ids, values = _windows(batch, window)
        for layer, layer_values in values.items():
            masked = np.isnan(layer_values)
            m = layer_values.shape[2]
            for sign, size in sizes.items():
                top = tops.setdefault((layer, sign), _RunningTop(m, size, window))
                key = _window_keys(sign, layer_values, masked, docs, starts, window, layer, seed)
                top.push(key, docs, starts, lengths, layer_values, token_ids)
    if quantile_per_component:
        for key, pool in tops.items():
            if key[1] == QUANTILE:
                _keep_bands(pool, quantile_per_component)
    return _window_frame(tops, tokenizer, list(sizes))


def _is_count(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0


def _window_keys(sign: str, values: np.ndarray, masked: np.ndarray, docs: np.ndarray, starts: np.ndarray,
                 window: int, layer: int, seed: int) -> np.ndarray:
    """Key [N, m] that `_RunningTop` keeps the largest of; -inf for windows with no unmasked token, and
    for top windows where the direction never takes that sign (a latent that never fires on a window,
    zero everywhere, is not one of its top windows)."""
    if sign in ("positive", "negative"):
        key = np.where(masked, -np.inf, values if sign == "positive" else -values).max(axis=1, initial=-np.inf)
        return np.where(key > 0, key, -np.inf)
    if sign == QUANTILE:
        key = -_random_keys(docs, starts, window, values.shape[2], layer, seed, stream=1)
        peak = np.where(masked, -np.inf, values).max(axis=1, initial=-np.inf)
        return np.where(peak > 0, key, -np.inf)
    key = -_random_keys(docs, starts, window, values.shape[2], layer, seed)
    return np.where(masked.all(axis=1), -np.inf, key)


def _keep_bands(pool: _RunningTop, count: int) -> None:
    """Reduce a pool of activating windows to ``count`` at evenly spaced ranks of their peak, weakest
    first (fewer when the pool is smaller); the others' keys become -inf, so they are not kept."""
    peaks = np.where(pool.key > -np.inf, np.nanmax(np.where(np.isnan(pool.values), -np.inf, pool.values), axis=2),
                     np.inf)
    order = np.argsort(peaks, axis=1, kind="stable")
    kept = np.full(pool.key.shape, False)
    for row, n in enumerate((pool.key > -np.inf).sum(axis=1)):
        if n:
            picks = np.unique(np.round((np.arange(count) + 0.5) / count * (n - 1)).astype(int))
            kept[row, order[row, picks]] = True
    rank = np.argsort(np.where(kept, peaks, np.inf), axis=1, kind="stable")
    rows = np.arange(pool.key.shape[0])[:, None]
    for name in ("values", "token_ids", "length", "doc", "start"):
        setattr(pool, name, getattr(pool, name)[rows, rank])
    pool.key = np.where(np.take_along_axis(kept, rank, axis=1), 0.0, -np.inf)


def _random_keys(docs: np.ndarray, starts: np.ndarray, window: int, m: int, layer: int, seed: int,
                 stream: int = 0) -> np.ndarray:
    """Uniform [0, 1) key [N, m] of each window and component: row ``start // window`` of one draw
    ``default_rng([seed, layer, doc]).random((windows in doc, m))``. A document always arrives whole in
    one batch, so every window gets the same key however the corpus is batched; keeping the k smallest
    keys is a uniform sample without replacement (bottom-k reservoir sampling)."""
    keys = np.empty((len(docs), m))
    position = starts // window
    for doc in np.unique(docs):
        rows = np.flatnonzero(docs == doc)
        rng = np.random.default_rng([seed, layer, int(doc)] + ([stream] if stream else []))
        keys[rows] = rng.random((int(position[rows].max()) + 1, m))[position[rows]]
    return keys


REPLACEMENT = "\ufffd"
"""What a tokenizer decodes an incomplete UTF-8 sequence to (a byte-fallback token on its own)."""
MAX_BYTES = 4


def decode_tokens(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int],
                  single: Mapping[int, str] | None = None) -> list[str]:
    """Each token's text, with byte-fallback runs decoded together: a character split over 2–4 byte
    tokens is given to the run's first token and the others get "" (decoded alone, each would be "�").

    ``single`` caches ``tokenizer.decode([id])`` for ids already decoded."""
    alone = [single[i] if single is not None and i in single else tokenizer.decode([i]) for i in ids]
    out = list(alone)
    position = 0
    while position < len(ids):
        if REPLACEMENT in alone[position]:
            for end in range(position + 2, min(position + MAX_BYTES, len(ids)) + 1):
                joined = tokenizer.decode(list(ids[position:end]))
                if REPLACEMENT not in joined:
                    out[position:end] = [joined] + [""] * (end - position - 1)
                    position = end - 1
                    break
        position += 1
    return out


def _peak(sign: str, key: float, values: np.ndarray) -> float:
    """The window's max ("positive", "random") or min ("negative"); the key of a top window is its peak."""
    if sign == "positive":
        return float(key)
    if sign == "negative":
        return -float(key)
    return float(np.nanmax(values))  # random and quantile windows: the window's max


def _window_frame(
    tops: Mapping[tuple[int, str], _RunningTop], tokenizer: PreTrainedTokenizerBase, signs: Sequence[str]
) -> pd.DataFrame:
    kept = {key: top.key > -np.inf for key, top in tops.items()}
    used = sorted({int(i) for key, top in tops.items() for i in np.unique(top.token_ids[kept[key]])})
    text = {i: tokenizer.decode([i]) for i in used}
    rows = []
    for layer in sorted({layer for layer, _ in tops}):
        m = tops[layer, signs[0]].key.shape[0]
        for component in range(m):
            for sign in signs:
                top = tops[layer, sign]
                for rank in np.flatnonzero(kept[layer, sign][component]):
                    length = int(top.length[component, rank])
                    ids = top.token_ids[component, rank, :length].tolist()
                    values = top.values[component, rank, :length]
                    rows.append({
                        "layer": layer,
                        "component": component,
                        "sign": sign,
                        "rank": int(rank),
                        "doc": int(top.doc[component, rank]),
                        "start": int(top.start[component, rank]),
                        "token_ids": ids,
                        "tokens": decode_tokens(tokenizer, ids, text),
                        "values": values.astype(float).tolist(),
                        "peak": _peak(sign, top.key[component, rank], values),
                    })
    return pd.DataFrame(rows, columns=list(WINDOW_COLUMNS))
