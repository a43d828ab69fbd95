"""Self-contained HTML dashboards for auditing candidate directions: layers → components (or SAE
latents) → their top windows on the generic corpus, tokens coloured by the direction's value, and,
from the windows stage's profiles, the activation histogram with its quantiles, the tokens the
direction promotes and suppresses through the unembedding, and where it fires on D_amb prompts.

One file, inline CSS and vanilla JS (search, layer filter, sort, keyboard navigation, ticking cards
and copying them as a manual-selection YAML); the numbers are also embedded as JSON
(``<script type="application/json" id="caft-cards">``) so tools and tests read the page without
scraping. No external resources, so it opens offline, mails, and archives with the results. The
output is deterministic (no timestamps), so an unchanged input gives a byte-identical file.

The markup is the package's jinja2 templates (``templates/dashboard.html.j2`` and its macros, which
inline ``dashboard.css`` and ``dashboard.js``), autoescaped: this module computes plain data (cards,
windows, badges, tables) and never builds HTML, so a token such as ``<script>`` is escaped once, by
the template.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from caft.ablation.selection import Selection
from caft.artifacts import atomic_path
from caft.errors import DataError

SIGNS: tuple[str, ...] = ("positive", "negative")
RANDOM = "random"
"""Sign of the uniformly sampled windows (`caft.directions.windows.RANDOM`): shown collapsed below a card's top windows."""
QUANTILE = "quantile"
"""Sign of the windows below the top, weakest first (`caft.directions.windows.QUANTILE`)."""
SIGN_TITLES = {"positive": "most positive", "negative": "most negative"}
WINDOW_COLUMNS: tuple[str, ...] = ("layer", "sign", "rank", "doc", "start", "tokens", "values", "peak")
SIGN_RGB = {"positive": "255,140,0", "negative": "30,110,255"}  # orange / blue
KNOWN_BADGES = ("manual", "top", "random", "random-pool", "auto")
PACKAGE_DATA = ("templates/*",)
"""The page's templates, CSS and JS (`caft.tracking`: an edit reruns the dashboards)."""
TEMPLATE = "dashboard.html.j2"
HIST_WIDTH, HIST_HEIGHT = 260, 70


class Token(NamedTuple):
    """A window token as shown: visible text, its value (None: masked BOS/pad) and tint (None: too faint)."""

    text: str
    value: float | None
    rgb: str | None
    alpha: float


class Window(NamedTuple):
    """One window of a card: its header numbers and tokens."""

    rank: Any
    doc: Any
    start: Any
    peak: Any
    tokens: list[Token]


class CardWindows(NamedTuple):
    """A card's windows: the top ones per page-wide sign (side by side; a sign may have none), the
    quantile bands below the top, and the random sample."""

    signs: list[tuple[str, list[Window]]]
    quantile: list[Window]
    random: list[Window]


class Bar(NamedTuple):
    """A histogram bin, in SVG coordinates, with its edges and count for the hover title."""

    x: float
    y: float
    width: float
    height: float
    low: float
    high: float
    count: int


class Mark(NamedTuple):
    """A vertical line on the histogram: a quantile (no sign) or a top window's peak."""

    x: float
    value: float
    sign: str = ""


class Histogram(NamedTuple):
    """A card's activation histogram: its bins, quantile lines and top-window peak ticks."""

    bars: list[Bar]
    quantiles: list[Mark]
    peaks: list[Mark]


class Profile(NamedTuple):
    """A card's activation profile: statistics, histogram (None: no bins), logit effects (None: not
    computed) as (token text, logit) pairs, and D_amb examples as (row, tokens) pairs."""

    tokens: Any
    density: Any
    mean: Any
    std: Any
    low: Any
    high: Any
    quantiles: list[tuple[float, float]]
    histogram: Histogram | None
    ab_logit_diff: Any
    promoted: list[tuple[str, float]] | None
    suppressed: list[tuple[str, float]] | None
    examples: list[tuple[Any, list[Token]]]


class Field(NamedTuple):
    """A field on a card's header; text (an explanation) gets a line of its own."""

    name: str
    value: Any
    text: bool


class Card(NamedTuple):
    """One candidate: its anchor, the selectors that chose it (badges), header fields, the numbers it
    sorts by (``data-f_*``), what the search box matches, its windows (None: none) and profile."""

    layer: int
    ident: int
    anchor: str
    names: list[str]
    ticked: bool
    fields: list[Field]
    numbers: list[tuple[str, float]]
    search: str
    windows: CardWindows | None
    profile: Profile | None


class LegendRow(NamedTuple):
    """A selection in the legend: ``layers`` is (layer, directions) for the layers it selects from."""

    name: str
    directions: int
    method: str
    seed: int | None
    layers: list[tuple[int, int]]


class IndexLine(NamedTuple):
    """A layer in the index: links as (id, anchor, selectors) and selected ids without a card as
    (selector, ids)."""

    layer: int
    links: list[tuple[int, str, list[str]]]
    extras: list[tuple[str, list[int]]]


class ReportTable(NamedTuple):
    """A table shown above the cards; cells are formatted by the template (`fmt`)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]


def card_anchor(layer: int, ident: int) -> str:
    """The HTML id of a card (``L3-C2``: layer 3, candidate 2 — a PCA component or an SAE latent)."""
    return f"L{layer}-C{ident}"


def render_dashboard(
    title: str,
    windows: pd.DataFrame,
    summary: pd.DataFrame,
    selections: Mapping[str, Selection],
    id_column: str = "component",
    card_fields: Sequence[str] | None = None,
    tables: Sequence[tuple[str, pd.DataFrame]] = (),
    profiles: pd.DataFrame | None = None,
) -> str:
    """The dashboard of one task as an HTML string.

    `summary` has one row per (layer, `id_column`) — one card each, layers ascending, cards in the
    summary's row order within a layer — and `card_fields` of its columns are shown on the card
    (default: every other column; text such as an explanation gets a line of its own). `windows` has
    columns layer, `id_column`, sign ("positive"/"negative"/"random"), rank, doc, start, tokens (list
    of str), values (list of float, NaN = masked BOS/pad) and peak. A sign section is shown on every
    card when any window has that sign (PCs: both; SAE latents: positive only); "random" windows (the
    uniform sample for simulation scoring) go in a collapsed section. `selections` maps a selector
    name to its selection; each card gets a badge per selector that chose it. `tables` are (title,
    frame) sections shown above the cards, e.g. the SAE training report and the attribution check.
    `profiles` (`caft.directions.profiles.card_profiles`, keyed by layer and `id_column`) adds each
    card's histogram, logit effects and D_amb examples.
    """
    _require(windows, ["layer", id_column, *WINDOW_COLUMNS[1:]], "windows")
    _require(summary, ["layer", id_column], "summary")
    fields = list(card_fields) if card_fields is not None else [
        c for c in summary.columns if c not in ("layer", id_column)
    ]
    _require(summary, fields, "summary (card_fields)")
    keys = [(int(layer), int(ident)) for layer, ident in zip(summary["layer"], summary[id_column])]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise DataError(f"dashboard summary: (layer, {id_column}) {duplicates[0]} appears more than once")
    bad_signs = sorted(set(windows["sign"]) - {*SIGNS, RANDOM, QUANTILE})
    if bad_signs:
        raise DataError(f"dashboard windows: sign must be one of {[*SIGNS, RANDOM, QUANTILE]}, got {bad_signs}")
    methods = sorted({selection.method for selection in selections.values()})
    if len(methods) > 1:
        raise DataError(f"dashboard selections mix methods {methods}; one dashboard shows one method")

    grouped = {
        (int(layer), int(ident)): frame
        for (layer, ident), frame in windows.groupby(["layer", id_column], sort=False)
    }
    orphans = sorted(set(grouped) - set(keys))
    if orphans:
        raise DataError(
            f"dashboard windows: (layer, {id_column}) {orphans[:5]} have windows but no summary row"
        )
    chosen: dict[tuple[int, int], list[str]] = {}
    for name, selection in selections.items():
        for layer, ids in selection.layers.items():
            for ident in ids:
                chosen.setdefault((layer, ident), []).append(name)
    signs = [sign for sign in SIGNS if (windows["sign"] == sign).any()]
    profile_of = _profiles_by_card(profiles, id_column)

    by_layer: dict[int, list[Card]] = {}
    data = []
    for key, record in zip(keys, summary.to_dict("records")):
        profile = profile_of.get(key)
        by_layer.setdefault(key[0], []).append(
            _card(key, record, fields, grouped.get(key), signs, chosen.get(key, []), id_column, profile)
        )
        data.append(_card_data(key, record, fields, chosen.get(key, []), profile))
    return _environment().get_template(TEMPLATE).render(
        title=title,
        method="sae" if id_column == "latent" else "pca",
        id_column=id_column,
        n_cards=len(keys),
        n_windows=len(windows),
        legend=_legend(selections),
        tables=[_report_table(name, frame) for name, frame in tables],
        index=_index(keys, chosen, selections),
        sort_fields=[f for f in fields if pd.api.types.is_numeric_dtype(summary[f])],
        layers=sorted(by_layer.items()),
        data=data,
    )


def card_data(html: str) -> list[dict[str, Any]]:
    """The cards' numbers embedded in a dashboard page (what tools and tests read instead of the HTML)."""
    match = re.search(r'<script type="application/json" id="caft-cards">(.*?)</script>', html, re.S)
    if match is None:
        raise DataError("the page has no embedded card data (caft-cards)")
    return json.loads(match.group(1))


def write_dashboard(html: str, path: str | Path) -> None:
    """Write the dashboard atomically (UTF-8: the page uses ␣ and ↵ for whitespace)."""
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


@cache
def _environment() -> Environment:
    """The templates' environment. Autoescaped, so no value reaches the page unescaped; strict, so a
    misspelt name fails instead of rendering empty; trimmed, so the page has no whitespace between
    elements; `tojson` keeps the cards' key order, writes UTF-8 as is and refuses NaN (invalid JSON)."""
    environment = Environment(
        loader=PackageLoader("caft.interpret", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "allow_nan": False}
    environment.filters["fmt"] = _fmt
    environment.globals.update(
        sign_titles=SIGN_TITLES, sign_rgb=SIGN_RGB, known_badges=KNOWN_BADGES,
        hist_width=HIST_WIDTH, hist_height=HIST_HEIGHT,
    )
    return environment


def _report_table(title: str, frame: pd.DataFrame) -> ReportTable:
    rows = [list(record) for record in frame.itertuples(index=False)]
    return ReportTable(title, [str(column) for column in frame.columns], rows)


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"dashboard {what} lacks column(s) {missing} (has {list(frame.columns)})")


def _fmt(value: Any) -> str:
    """A value as text (the `fmt` filter): 4 significant digits for floats, an em dash for missing values."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "—"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def _legend(selections: Mapping[str, Selection]) -> list[LegendRow]:
    return [
        LegendRow(name, selection.count(), selection.method, selection.seed,
                  [(layer, len(ids)) for layer, ids in selection.layers.items() if ids])
        for name, selection in selections.items()
    ]


def _index(
    keys: Sequence[tuple[int, int]],
    chosen: Mapping[tuple[int, int], list[str]],
    selections: Mapping[str, Selection],
) -> list[IndexLine]:
    """Per layer, links to every card (selected ones highlighted), plus selected ids that have no
    card (e.g. random SAE latents outside the candidates), so nothing selected goes unseen."""
    ids_on_page: dict[int, set[int]] = {}
    for layer, ident in keys:
        ids_on_page.setdefault(layer, set()).add(ident)
    layers = sorted({layer for layer, _ in keys} | {layer for layer, _ in chosen})
    return [
        IndexLine(
            layer,
            [(key[1], card_anchor(*key), chosen.get(key, [])) for key in keys if key[0] == layer],
            [
                (name, sorted(missing))
                for name, selection in selections.items()
                if (missing := set(selection.layers.get(layer, [])) - ids_on_page.get(layer, set()))
            ],
        )
        for layer in layers
    ]


def _card(
    key: tuple[int, int],
    record: Mapping[str, Any],
    fields: Sequence[str],
    windows: pd.DataFrame | None,
    signs: Sequence[str],
    names: Sequence[str],
    id_column: str,
    profile: Mapping[str, Any] | None = None,
) -> Card:
    """A card's view; its header shows the fields that have a value (missing ones are left out)."""
    return Card(
        layer=key[0],
        ident=key[1],
        anchor=card_anchor(*key),
        names=list(names),
        ticked="manual" in names,
        fields=[Field(f, record[f], isinstance(record[f], str)) for f in fields if not _missing(record[f])],
        numbers=[(f, float(record[f])) for f in fields if _is_number(record[f])],
        search=_search_text(record, fields, windows, profile),
        windows=None if windows is None else _card_windows(windows, signs, key, id_column),
        profile=None if profile is None else _profile(profile, windows),
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value)) or value == ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def _search_text(record: Mapping[str, Any], fields: Sequence[str], windows: pd.DataFrame | None,
                 profile: Mapping[str, Any] | None) -> str:
    """What the search box matches: text fields, the peak token of every top window, promoted tokens."""
    parts = [str(record[f]) for f in fields if isinstance(record[f], str)]
    if windows is not None:
        for tokens, values in zip(windows["tokens"], windows["values"]):
            finite = [(abs(v), t) for t, v in zip(tokens, _values(values)) if math.isfinite(v)]
            if finite:
                parts.append(max(finite, key=lambda pair: pair[0])[1])
    if profile is not None:
        parts += [str(t) for t in _plain(profile.get("promoted")) or []]
    return " ".join(parts).lower()


def _plain(value: Any) -> Any:
    """A value as JSON: NaN and missing → null, numpy scalars and arrays → Python."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


PROFILE_FIELDS = ("tokens", "density", "mean", "std", "min", "max", "quantile_levels", "quantiles", "hist_edges",
                  "hist_counts",
                  "promoted", "promoted_logits", "suppressed", "suppressed_logits", "ab_logit_diff",
                  "example_rows")


def _card_data(key: tuple[int, int], record: Mapping[str, Any], fields: Sequence[str], names: Sequence[str],
               profile: Mapping[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"layer": key[0], "id": key[1], "anchor": card_anchor(*key), "selections": list(names),
                            "fields": {f: _plain(record[f]) for f in fields}}
    if profile is not None:
        data["profile"] = {f: _plain(profile[f]) for f in PROFILE_FIELDS if f in profile}
    return data


def _profiles_by_card(profiles: pd.DataFrame | None, id_column: str) -> dict[tuple[int, int], dict[str, Any]]:
    if profiles is None:
        return {}
    _require(profiles, ["layer", id_column], "profiles")
    return {(int(r["layer"]), int(r[id_column])): r for r in profiles.to_dict("records")}


def _profile(profile: Mapping[str, Any], windows: pd.DataFrame | None) -> Profile:
    """Histogram (quantiles dashed, top-window peaks as ticks), its numbers, the logit effects and the
    candidate's activation on each token of a few D_amb prompts (coloured like the windows)."""
    counts = [int(c) for c in _plain(profile.get("hist_counts")) or []]
    edges = [float(e) for e in _plain(profile.get("hist_edges")) or []]
    quantiles = [float(q) for q in _plain(profile.get("quantiles")) or []]
    levels = _plain(profile.get("quantile_levels")) or []
    peaks = [] if windows is None else [
        (str(sign), float(peak)) for sign, peak in zip(windows["sign"], windows["peak"])
        if sign in SIGNS and math.isfinite(float(peak))
    ]
    has_effects = profile.get("promoted") is not None
    return Profile(
        tokens=profile.get("tokens"),
        density=profile.get("density"),
        mean=profile.get("mean"),
        std=profile.get("std"),
        low=profile.get("min"),
        high=profile.get("max"),
        quantiles=list(zip(levels, quantiles)),
        histogram=_histogram(counts, edges, quantiles, peaks) if counts and edges else None,
        ab_logit_diff=profile.get("ab_logit_diff"),
        promoted=_effects(profile["promoted"], profile["promoted_logits"]) if has_effects else None,
        suppressed=_effects(profile["suppressed"], profile["suppressed_logits"]) if has_effects else None,
        examples=_examples(profile),
    )


def _effects(names: Any, logits: Any) -> list[tuple[str, float]]:
    return [(_token_text(str(name)), float(logit)) for name, logit in zip(names, _plain(logits))]


def _histogram(counts: Sequence[int], edges: Sequence[float], quantiles: Sequence[float],
               peaks: Sequence[tuple[str, float]]) -> Histogram:
    low, high = edges[0], edges[-1]
    span = (high - low) or 1.0
    top = max(counts) or 1

    def x(value: float) -> float:
        return (min(max(value, low), high) - low) / span * HIST_WIDTH

    width = HIST_WIDTH / len(counts)
    bars = [
        Bar(i * width, HIST_HEIGHT - 10 - c / top * (HIST_HEIGHT - 14), width, c / top * (HIST_HEIGHT - 14),
            edges[i], edges[i + 1], c)
        for i, c in enumerate(counts)
    ]
    return Histogram(bars, [Mark(x(q), q) for q in quantiles], [Mark(x(v), v, sign) for sign, v in peaks])


def _examples(profile: Mapping[str, Any]) -> list[tuple[Any, list[Token]]]:
    """The D_amb prompts as (row, tokens), coloured on the scale of their own largest |value|."""
    rows = _plain(profile.get("example_rows"))
    if not rows:
        return []
    all_values = [v for values in _plain(profile["example_values"]) for v in values if v is not None]
    scale = max((abs(v) for v in all_values if math.isfinite(v)), default=0.0)
    return [
        (row, [_token(str(t), math.nan if v is None else float(v), scale) for t, v in zip(tokens, values)])
        for row, tokens, values in zip(rows, profile["example_tokens"], _plain(profile["example_values"]))
    ]


def _card_windows(windows: pd.DataFrame, signs: Sequence[str], key: tuple[int, int],
                  id_column: str) -> CardWindows | None:
    """One section per sign (side by side), then the quantile bands and the random sample, collapsed:
    it is there to check simulation scores, not to read first. None when there is nothing to show."""
    scale = _max_abs(windows)
    shown = CardWindows(
        [(sign, _windows(windows, sign, scale, key, id_column)) for sign in signs],
        _windows(windows, QUANTILE, scale, key, id_column),
        _windows(windows, RANDOM, scale, key, id_column),
    )
    return shown if any(shown) else None


def _windows(windows: pd.DataFrame, sign: str, scale: float, key: tuple[int, int], id_column: str) -> list[Window]:
    rows = windows[windows["sign"] == sign].sort_values("rank", kind="stable")
    return [_window(row, scale, key, id_column) for row in rows.to_dict("records")]


def _values(raw: Any) -> list[float]:
    return [math.nan if v is None else float(v) for v in raw]


def _max_abs(windows: pd.DataFrame) -> float:
    """Colour scale of a card: the largest finite |value| over all its windows (both signs)."""
    finite = [abs(v) for raw in windows["values"] for v in _values(raw) if math.isfinite(v)]
    return max(finite, default=0.0)


def _window(row: Mapping[str, Any], scale: float, key: tuple[int, int], id_column: str) -> Window:
    tokens = list(row["tokens"])
    values = _values(row["values"])
    if len(tokens) != len(values):
        raise DataError(
            f"dashboard windows: layer {key[0]} {id_column} {key[1]} {row['sign']} rank {row['rank']}: "
            f"{len(tokens)} tokens but {len(values)} values"
        )
    spans = [_token(str(token), value, scale) for token, value in zip(tokens, values)]
    return Window(row["rank"], row["doc"], row["start"], row["peak"], spans)


_SPACES = re.compile(r"^ +$")


def _token_text(token: str) -> str:
    """Visible token text: SentencePiece ▁ is a space; whitespace-only tokens show ␣ per space (else
    they would be invisible), newlines ↵, tabs ⇥. The empty text is a byte-fallback continuation
    (`caft.directions.windows.decode_tokens` gives the character to the run's first token) and shows
    nothing."""
    text = token.replace("\u2581", " ").replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")
    text = text.replace("\t", "⇥")
    if _SPACES.match(text):
        text = "␣" * len(text)
    return text


def _token(token: str, value: float, scale: float) -> Token:
    """A token and its tint: opacity |value| / the card's scale, none below 0.5%."""
    text = _token_text(token)
    if not math.isfinite(value):
        return Token(text, None, None, 0.0)
    alpha = abs(value) / scale if scale > 0 else 0.0
    rgb = SIGN_RGB["positive" if value > 0 else "negative"] if alpha >= 0.005 else None
    return Token(text, value, rgb, alpha)
