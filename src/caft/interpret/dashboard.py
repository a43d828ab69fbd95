"""Self-contained HTML dashboards for auditing candidate directions: layers → components (or SAE
latents) → their top windows on the generic corpus, tokens coloured by the direction's value.

One file, inline CSS and a few lines of vanilla JS (expand/collapse, open the card a link points
to); no external resources, so it can be opened offline, mailed, or archived with the results. The
output is deterministic (no timestamps), so an unchanged input gives a byte-identical file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caft.ablation.selection import Selection
from caft.artifacts import atomic_path
from caft.errors import DataError

SIGNS: tuple[str, ...] = ("positive", "negative")
RANDOM = "random"
"""Sign of the uniformly sampled windows (`caft.directions.windows.RANDOM`): shown collapsed below a card's top windows."""
SIGN_TITLES = {"positive": "most positive", "negative": "most negative"}
WINDOW_COLUMNS: tuple[str, ...] = ("layer", "sign", "rank", "doc", "start", "tokens", "values", "peak")
SIGN_RGB = {"positive": "255,140,0", "negative": "30,110,255"}  # orange / blue
KNOWN_BADGES = ("manual", "top", "random", "auto")
NO_WINDOWS = '<div class="none">no windows</div>'

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}
nav.index,.legend,details.layer{background:#fff;border:1px solid #ddd;border-radius:6px;
  padding:.5em 1em;margin:.6em 0}
.il{margin:.2em 0}.il a{margin-right:.35em;text-decoration:none;color:#555}
.il a.sel{font-weight:bold;color:#000;background:#ffe082;padding:0 .25em;border-radius:3px}
.il .extra{color:#a00;font-size:.85em}
details.layer>summary{font-size:1.15em;font-weight:bold;cursor:pointer}
details.card{border:1px solid #e0e0e0;border-radius:5px;margin:.4em 0;padding:.2em .6em;background:#fff}
details.card.sel{border-left:5px solid #f9a825}
details.card>summary{cursor:pointer}
.cid{font-weight:bold;margin-right:.5em}
.f{margin-right:.9em;font-size:.9em;overflow-wrap:anywhere}.f b{color:#666;font-weight:normal}
.f.x{display:block;margin:.1em 0 .1em 1.2em;white-space:normal}
.b{display:inline-block;padding:0 .45em;margin-right:.3em;border-radius:8px;font-size:.8em;color:#fff;
  background:#00796b}
.b-manual{background:#2e7d32}.b-top{background:#6a1b9a}.b-random{background:#616161}
.b-auto{background:#1565c0}
.signs{display:flex;flex-wrap:wrap;gap:1em}.sign{flex:1 1 30em;min-width:0}
.sign h4{margin:.4em 0}
details.rand{margin:.3em 0}details.rand>summary{cursor:pointer;color:#555;font-size:.9em}
.w{margin:.25em 0;padding:.2em .3em;border-bottom:1px dotted #ddd}
.wh{font-size:.75em;color:#777}
.tok{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap;word-break:break-all;
  line-height:1.6}
.t{border-radius:2px}.t.m{color:#aaa;background:#eee}
.none{color:#999;font-style:italic}
.legend span.t{padding:0 .3em;margin-right:.6em}
table.report{border-collapse:collapse;font-size:.85em;margin:.4em 0}
table.report td,table.report th{border:1px solid #ddd;padding:.15em .5em;text-align:right}
"""

JS = """
function openTarget(){
  var id=decodeURIComponent(location.hash.slice(1)),el=id&&document.getElementById(id),t=el;
  for(;el;el=el.parentElement){if(el.tagName==="DETAILS")el.open=true;}
  if(t)t.scrollIntoView();
}
function setAll(open){document.querySelectorAll("details.card").forEach(function(d){d.open=open;});}
window.addEventListener("hashchange",openTarget);openTarget();
"""


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
    bad_signs = sorted(set(windows["sign"]) - {*SIGNS, RANDOM})
    if bad_signs:
        raise DataError(f"dashboard windows: sign must be one of {[*SIGNS, RANDOM]}, got {bad_signs}")
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

    records = summary.to_dict("records")
    by_layer: dict[int, list[str]] = {}
    for key, record in zip(keys, records):
        by_layer.setdefault(key[0], []).append(
            _card(key, record, fields, grouped.get(key), signs, chosen.get(key, []), id_column)
        )
    layers_html = "".join(
        f'<details class="layer" open id="L{layer}"><summary>Layer {layer} '
        f'<span class="f">({len(cards)} cards)</span></summary>{"".join(cards)}</details>'
        for layer, cards in sorted(by_layer.items())
    )
    body = (
        f"<h1>{escape(title)}</h1>"
        f'<div><button onclick="setAll(true)">expand all</button> '
        f'<button onclick="setAll(false)">collapse all</button></div>'
        f"{_legend(selections, len(keys), len(windows))}"
        f"{''.join(_table(title, frame) for title, frame in tables)}"
        f"{_index(keys, chosen, selections)}"
        f"{layers_html}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}<script>{JS}</script></body></html>\n"
    )


def write_dashboard(html: str, path: str | Path) -> None:
    """Write the dashboard atomically (UTF-8: the page uses ␣ and ↵ for whitespace)."""
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


def _table(title: str, frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(column))}</th>" for column in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(value)}</td>" for value in record) + "</tr>"
        for record in frame.itertuples(index=False)
    )
    return (
        f'<details class="legend" open><summary><b>{escape(title)}</b></summary>'
        f'<table class="report"><tr>{head}</tr>{rows}</table></details>'
    )


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"dashboard {what} lacks column(s) {missing} (has {list(frame.columns)})")


def _fmt(value: Any) -> str:
    """A cell as escaped text: 4 significant digits for floats, an em dash for missing values."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "—"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return escape(str(value))


def _badges(names: Sequence[str]) -> str:
    out = []
    for name in names:
        known = f" b-{name}" if name in KNOWN_BADGES else ""
        out.append(f'<span class="b{known}">{escape(name)}</span>')
    return "".join(out)


def _legend(selections: Mapping[str, Selection], n_cards: int, n_windows: int) -> str:
    rows = "".join(
        f"<li>{_badges([name])} {selection.count()} {escape(selection.method)} directions"
        f"{'' if selection.seed is None else f', seed {selection.seed}'}: "
        + ", ".join(f"L{layer}: {len(ids)}" for layer, ids in selection.layers.items() if ids)
        + "</li>"
        for name, selection in selections.items()
    )
    return (
        f'<div class="legend"><div>{n_cards} cards, {n_windows} windows. '
        f'<span class="t" style="background:rgba({SIGN_RGB["positive"]},0.8)">positive</span>'
        f'<span class="t" style="background:rgba({SIGN_RGB["negative"]},0.8)">negative</span>'
        '<span class="t m">masked (BOS/pad)</span> '
        "intensity ∝ |value| / max |value| of the card; hover a token for its value; "
        "␣ = space, ↵ = newline, ⇥ = tab.</div>"
        f"<ul>{rows or '<li>no selections</li>'}</ul></div>"
    )


def _index(
    keys: Sequence[tuple[int, int]],
    chosen: Mapping[tuple[int, int], list[str]],
    selections: Mapping[str, Selection],
) -> str:
    """Per layer, links to every card (selected ones highlighted), plus selected ids that have no
    card (e.g. random SAE latents outside the candidates), so nothing selected goes unseen."""
    ids_on_page: dict[int, set[int]] = {}
    for layer, ident in keys:
        ids_on_page.setdefault(layer, set()).add(ident)
    layers = sorted({layer for layer, _ in keys} | {layer for layer, _ in chosen})
    lines = []
    for layer in layers:
        links = []
        for key in (k for k in keys if k[0] == layer):
            names = chosen.get(key, [])
            attrs = f' class="sel" title="{escape(", ".join(names))}"' if names else ""
            links.append(f'<a href="#{card_anchor(*key)}"{attrs}>{key[1]}</a>')
        extras = "".join(
            f'<span class="extra">{escape(name)} also selects {sorted(missing)} (no card) </span>'
            for name, selection in selections.items()
            if (missing := set(selection.layers.get(layer, [])) - ids_on_page.get(layer, set()))
        )
        lines.append(
            f'<div class="il"><a href="#L{layer}"><b>Layer {layer}</b></a>: {"".join(links)}{extras}</div>'
        )
    return f'<nav class="index"><b>Index</b>{"".join(lines)}</nav>'


def _card(
    key: tuple[int, int],
    record: Mapping[str, Any],
    fields: Sequence[str],
    windows: pd.DataFrame | None,
    signs: Sequence[str],
    names: Sequence[str],
    id_column: str,
) -> str:
    layer, ident = key
    shown = "".join(_field(f, record[f]) for f in fields)
    head = f'<span class="cid">{escape(id_column)} {ident}</span>{_badges(names)}{shown}'
    body = NO_WINDOWS if windows is None else _card_windows(windows, signs, key, id_column)
    selected = " sel" if names else ""
    return (
        f'<details class="card{selected}" id="{card_anchor(layer, ident)}">'
        f"<summary>{head}</summary>{body}</details>"
    )


def _field(name: str, value: Any) -> str:
    """A card field; text (an explanation) on a line of its own, so long sentences wrap under the numbers."""
    kind = "f x" if isinstance(value, str) else "f"
    return f'<span class="{kind}"><b>{escape(name)}</b> {_fmt(value)}</span>'


def _card_windows(windows: pd.DataFrame, signs: Sequence[str], key: tuple[int, int], id_column: str) -> str:
    """One section per sign (side by side), then the random sample collapsed: it is there to check
    simulation scores, not to read first."""
    scale = _max_abs(windows)
    sections = []
    for sign in signs:
        items = _windows_html(windows, sign, scale, key, id_column)
        sections.append(f'<div class="sign {sign}"><h4>{SIGN_TITLES[sign]}</h4>{items or NO_WINDOWS}</div>')
    body = f'<div class="signs">{"".join(sections)}</div>' if sections else ""
    sample = _windows_html(windows, RANDOM, scale, key, id_column)
    if sample:
        count = int((windows["sign"] == RANDOM).sum())
        body += f'<details class="rand"><summary>random sample ({count} windows)</summary>{sample}</details>'
    return body or NO_WINDOWS


def _windows_html(windows: pd.DataFrame, sign: str, scale: float, key: tuple[int, int], id_column: str) -> str:
    rows = windows[windows["sign"] == sign].sort_values("rank", kind="stable")
    return "".join(_window(row, scale, key, id_column) for row in rows.to_dict("records"))


def _values(raw: Any) -> list[float]:
    return [math.nan if v is None else float(v) for v in raw]


def _max_abs(windows: pd.DataFrame) -> float:
    """Colour scale of a card: the largest finite |value| over all its windows (both signs)."""
    finite = [abs(v) for raw in windows["values"] for v in _values(raw) if math.isfinite(v)]
    return max(finite, default=0.0)


def _window(row: Mapping[str, Any], scale: float, key: tuple[int, int], id_column: str) -> str:
    tokens = list(row["tokens"])
    values = _values(row["values"])
    if len(tokens) != len(values):
        raise DataError(
            f"dashboard windows: layer {key[0]} {id_column} {key[1]} {row['sign']} rank {row['rank']}: "
            f"{len(tokens)} tokens but {len(values)} values"
        )
    spans = "".join(_token(str(token), value, scale) for token, value in zip(tokens, values))
    head = (
        f"#{_fmt(row['rank'])} · doc {_fmt(row['doc'])} · start {_fmt(row['start'])} "
        f"· peak {_fmt(row['peak'])}"
    )
    return f'<div class="w"><div class="wh">{head}</div><div class="tok">{spans}</div></div>'


_SPACES = re.compile(r"^ +$")


def _token_text(token: str) -> str:
    """Visible, escaped token text: SentencePiece ▁ is a space; whitespace-only tokens show ␣ per
    space (else they would be invisible), newlines ↵, tabs ⇥, the empty token ∅."""
    text = token.replace("\u2581", " ").replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")
    text = text.replace("\t", "⇥")
    if not text:
        return "∅"
    if _SPACES.match(text):
        text = "␣" * len(text)
    return escape(text)


def _token(token: str, value: float, scale: float) -> str:
    text = _token_text(token)
    if not math.isfinite(value):
        return f'<span class="t m" title="masked">{text}</span>'
    alpha = abs(value) / scale if scale > 0 else 0.0
    style = ""
    if alpha >= 0.005:
        rgb = SIGN_RGB["positive" if value > 0 else "negative"]
        style = f' style="background:rgba({rgb},{alpha:.2f})"'
    return f'<span class="t"{style} title="{value:.4g}">{text}</span>'
