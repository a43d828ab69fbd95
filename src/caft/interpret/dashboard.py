"""Self-contained HTML dashboards for auditing candidate directions: layers → components (or SAE
latents) → their top windows on the generic corpus, tokens coloured by the direction's value, and,
from the windows stage's profiles, the activation histogram with its quantiles, the tokens the
direction promotes and suppresses through the unembedding, and where it fires on D_amb prompts.

One file, inline CSS and vanilla JS (search, layer filter, sort, keyboard navigation, ticking cards
and copying them as a manual-selection YAML); the numbers are also embedded as JSON
(``<script type="application/json" id="caft-cards">``) so tools and tests read the page without
scraping. No external resources, so it opens offline, mails, and archives with the results. The
output is deterministic (no timestamps), so an unchanged input gives a byte-identical file.
"""

from __future__ import annotations

import json
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
QUANTILE = "quantile"
"""Sign of the windows below the top, weakest first (`caft.directions.windows.QUANTILE`)."""
SIGN_TITLES = {"positive": "most positive", "negative": "most negative"}
WINDOW_COLUMNS: tuple[str, ...] = ("layer", "sign", "rank", "doc", "start", "tokens", "values", "peak")
SIGN_RGB = {"positive": "255,140,0", "negative": "30,110,255"}  # orange / blue
KNOWN_BADGES = ("manual", "top", "random", "random-pool", "auto")
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
.b-auto{background:#1565c0}.b-random-pool{background:#8d6e63}
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
.bar{position:sticky;top:0;z-index:2;background:#fafafa;padding:.4em 0;border-bottom:1px solid #ddd}
.bar input[type=search]{width:22em}.bar label{margin-left:.8em}#count{margin-left:.8em;color:#555}
#yaml{display:block;width:100%;max-width:60em;height:7em;margin-top:.3em;font-family:ui-monospace,monospace}
#yaml[hidden]{display:none}
details.card.focus{outline:2px solid #1565c0}
.pick{margin-right:.4em;transform:scale(1.2)}
.prof{display:flex;flex-wrap:wrap;gap:1.2em;margin:.4em 0;font-size:.85em}
.prof svg{background:#fff;border:1px solid #eee}.prof .lg li{list-style:none}
.prof ul{margin:.1em 0;padding-left:0}.prof code{background:#f1f1f1;padding:0 .2em}
.ex{margin:.3em 0}.ex h4{margin:.3em 0}
table.report{border-collapse:collapse;font-size:.85em;margin:.4em 0}
table.report td,table.report th{border:1px solid #ddd;padding:.15em .5em;text-align:right}
"""

JS = """
function openTarget(){
  var id=decodeURIComponent(location.hash.slice(1)),el=id&&document.getElementById(id),t=el;
  for(;el;el=el.parentElement){if(el.tagName==="DETAILS")el.open=true;}
  if(t)t.scrollIntoView();
}
function setAll(open){visible().forEach(function(d){d.open=open;});}
window.addEventListener("hashchange",openTarget);openTarget();
var cards=Array.prototype.slice.call(document.querySelectorAll("details.card")),focusAt=-1;
cards.forEach(function(c,i){c.dataset.order=i;c.origin=c.parentElement;});
function visible(){return cards.filter(function(c){return c.style.display!=="none";});}
function num(c,key){var v=parseFloat(c.dataset["f_"+key]);return isNaN(v)?null:v;}
function apply(){
  var q=document.getElementById("q").value.toLowerCase().trim(),layer=document.getElementById("layer").value,
      ticked=document.getElementById("ticked").checked,key=document.getElementById("sort").value,
      desc=document.getElementById("desc").checked,shown=0;
  cards.forEach(function(c){
    var ok=(!q||c.dataset.text.indexOf(q)>=0)&&(layer===""||c.dataset.layer===layer)&&
           (!ticked||c.querySelector("input.pick").checked);
    c.style.display=ok?"":"none";if(ok)shown++;});
  var flat=document.getElementById("sorted");
  if(key===""){cards.forEach(function(c){c.origin.appendChild(c);});
    document.querySelectorAll("details.layer").forEach(function(l){l.style.display="";});flat.style.display="none";}
  else{var order=cards.slice().sort(function(a,b){var x=num(a,key),y=num(b,key);
      if(x===null&&y===null)return a.dataset.order-b.dataset.order;if(x===null)return 1;if(y===null)return -1;
      return desc?y-x:x-y;});
    order.forEach(function(c){flat.appendChild(c);});flat.style.display="";
    document.querySelectorAll("details.layer").forEach(function(l){l.style.display="none";});}
  document.getElementById("count").textContent=shown+" of "+cards.length+" cards";
}
function selectionYaml(){
  var byLayer={},method=document.body.dataset.method;
  cards.forEach(function(c){if(c.querySelector("input.pick").checked){
    (byLayer[c.dataset.layer]=byLayer[c.dataset.layer]||[]).push(parseInt(c.dataset.id,10));}});
  var layers=Object.keys(byLayer).map(Number).sort(function(a,b){return a-b;});
  var lines=["# manual selection ticked in "+document.title,method+":","  layers:"];
  layers.forEach(function(l){lines.push("    "+l+": ["+byLayer[l].sort(function(a,b){return a-b;}).join(", ")+"]");});
  if(!layers.length)lines[2]="  layers: {}";
  lines.push('  notes: "ticked on the dashboard"');return lines.join("\\n")+"\\n";
}
function copySelection(){
  var box=document.getElementById("yaml");box.value=selectionYaml();box.hidden=false;box.select();
  if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(box.value).catch(function(){});}
  else{try{document.execCommand("copy");}catch(e){}}
}
function move(step){
  var shown=visible();if(!shown.length)return;
  var at=shown.indexOf(cards[focusAt]);at=Math.max(0,Math.min(shown.length-1,at<0?0:at+step));
  if(focusAt>=0)cards[focusAt].classList.remove("focus");
  focusAt=cards.indexOf(shown[at]);shown[at].classList.add("focus");shown[at].scrollIntoView({block:"nearest"});
}
document.addEventListener("keydown",function(e){
  var typing=e.target.tagName==="INPUT"&&e.target.type!=="checkbox"||e.target.tagName==="TEXTAREA";
  if(e.key==="Escape"){e.target.blur();return;}if(typing||e.ctrlKey||e.metaKey||e.altKey)return;
  var c=cards[focusAt];
  if(e.key==="j"){move(1);}else if(e.key==="k"){move(-1);}
  else if(e.key==="/"){document.getElementById("q").focus();}
  else if(e.key==="x"&&c){var box=c.querySelector("input.pick");box.checked=!box.checked;}
  else if(e.key==="o"&&c){c.open=!c.open;}else{return;}
  e.preventDefault();
});
["q","layer","sort","ticked","desc"].forEach(function(id){
  var el=document.getElementById(id);el.addEventListener("input",apply);el.addEventListener("change",apply);});
apply();
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
    method = "sae" if id_column == "latent" else "pca"

    records = summary.to_dict("records")
    by_layer: dict[int, list[str]] = {}
    data = []
    for key, record in zip(keys, records):
        profile = profile_of.get(key)
        by_layer.setdefault(key[0], []).append(
            _card(key, record, fields, grouped.get(key), signs, chosen.get(key, []), id_column, profile)
        )
        data.append(_card_data(key, record, fields, chosen.get(key, []), profile))
    layers_html = "".join(
        f'<details class="layer" open id="L{layer}"><summary>Layer {layer} '
        f'<span class="f">({len(cards)} cards)</span></summary>{"".join(cards)}</details>'
        for layer, cards in sorted(by_layer.items())
    )
    body = (
        f"<h1>{escape(title)}</h1>"
        f"{_legend(selections, len(keys), len(windows))}"
        f"{''.join(_table(title, frame) for title, frame in tables)}"
        f"{_index(keys, chosen, selections)}"
        f"{_toolbar(fields, summary, sorted(by_layer))}"
        f'<div id="sorted" style="display:none"></div>'
        f"{layers_html}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f'<body data-method="{method}">{body}'
        f'<script type="application/json" id="caft-cards">{_json(data)}</script>'
        f"<script>{JS}</script></body></html>\n"
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
    profile: Mapping[str, Any] | None = None,
) -> str:
    layer, ident = key
    shown = "".join(_field(f, record[f]) for f in fields)
    ticked = " checked" if "manual" in names else ""
    head = (
        f'<input type="checkbox" class="pick" title="tick for the selection YAML (key x)"{ticked}>'
        f'<span class="cid">L{layer} · {escape(id_column)} {ident}</span>{_badges(names)}{shown}'
    )
    body = NO_WINDOWS if windows is None else _card_windows(windows, signs, key, id_column)
    if profile is not None:
        body = _profile_html(profile, windows) + body + _examples_html(profile)
    selected = " sel" if names else ""
    numbers = "".join(
        f' data-f_{escape(f)}="{float(record[f]):.6g}"' for f in fields if _is_number(record[f])
    )
    return (
        f'<details class="card{selected}" id="{card_anchor(layer, ident)}" data-layer="{layer}" '
        f'data-id="{ident}" data-text="{escape(_search_text(record, fields, windows, profile))}"{numbers}>'
        f"<summary>{head}</summary>{body}</details>"
    )


def _field(name: str, value: Any) -> str:
    """A card field; text (an explanation) on a line of its own, so long sentences wrap under the
    numbers. Missing values are left out: the header shows what is known."""
    if _missing(value):
        return ""
    kind = "f x" if isinstance(value, str) else "f"
    return f'<span class="{kind}"><b>{escape(name)}</b> {_fmt(value)}</span>'


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


def _toolbar(fields: Sequence[str], summary: pd.DataFrame, layers: Sequence[int]) -> str:
    numeric = [f for f in fields if pd.api.types.is_numeric_dtype(summary[f])]
    sorts = "".join(f'<option value="{escape(f)}">{escape(f)}</option>' for f in numeric)
    layer_options = "".join(f'<option value="{layer}">layer {layer}</option>' for layer in layers)
    return (
        '<div class="bar"><input type="search" id="q" placeholder="search explanations and tokens (/)"> '
        f'<select id="layer"><option value="">all layers</option>{layer_options}</select> '
        f'sort <select id="sort"><option value="">page order</option>{sorts}</select>'
        '<label><input type="checkbox" id="desc" checked> descending</label>'
        '<label><input type="checkbox" id="ticked"> ticked only</label> '
        '<button onclick="setAll(true)">expand</button> <button onclick="setAll(false)">collapse</button> '
        '<button id="copy" onclick="copySelection()">copy selection YAML</button><span id="count"></span>'
        '<span class="wh"> keys: j/k next/previous card, o open, x tick, / search, Esc leave a field</span>'
        '<textarea id="yaml" readonly hidden></textarea></div>'
    )


def _json(value: Any) -> str:
    """JSON safe inside a <script> element (no "</" and no "<!--" can appear)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


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


HIST_WIDTH, HIST_HEIGHT = 260, 70


def _profile_html(profile: Mapping[str, Any], windows: pd.DataFrame | None) -> str:
    """Histogram (quantiles dashed, top-window peaks as ticks), its numbers, and the logit effects."""
    counts = [int(c) for c in _plain(profile.get("hist_counts")) or []]
    edges = [float(e) for e in _plain(profile.get("hist_edges")) or []]
    stats = (
        f"{_fmt(profile.get('tokens'))} tokens · density {_fmt(profile.get('density'))} · "
        f"mean {_fmt(profile.get('mean'))} ± {_fmt(profile.get('std'))} · "
        f"range [{_fmt(profile.get('min'))}, {_fmt(profile.get('max'))}]"
    )
    quantiles = [float(q) for q in _plain(profile.get("quantiles")) or []]
    levels = _plain(profile.get("quantile_levels")) or []
    qtext = ", ".join(f"q{q:g} {_fmt(v)}" for q, v in zip(levels, quantiles))
    peaks = [] if windows is None else [
        (str(sign), float(peak)) for sign, peak in zip(windows["sign"], windows["peak"])
        if sign in SIGNS and math.isfinite(float(peak))
    ]
    svg = _histogram_svg(counts, edges, quantiles, peaks) if counts and edges else NO_WINDOWS
    effects = ""
    if profile.get("promoted") is not None:
        def tokens(names: Any, logits: Any) -> str:
            return "".join(f"<li><code>{_token_text(str(t))}</code> {_fmt(float(v))}</li>"
                           for t, v in zip(names, _plain(logits)))

        effects = (
            '<div class="lg"><b>logit effects</b> (unit step, direct path) · '
            f"A−B logit difference {_fmt(profile.get('ab_logit_diff'))}"
            f'<div class="signs"><div><i>promotes</i><ul>{tokens(profile["promoted"], profile["promoted_logits"])}'
            f'</ul></div><div><i>suppresses</i><ul>{tokens(profile["suppressed"], profile["suppressed_logits"])}'
            "</ul></div></div></div>"
        )
    return f'<div class="prof"><div>{svg}<div class="wh">{stats}</div><div class="wh">{qtext}</div></div>{effects}</div>'


def _histogram_svg(counts: Sequence[int], edges: Sequence[float], quantiles: Sequence[float],
                   peaks: Sequence[tuple[str, float]]) -> str:
    low, high = edges[0], edges[-1]
    span = (high - low) or 1.0
    top = max(counts) or 1

    def x(value: float) -> float:
        return (min(max(value, low), high) - low) / span * HIST_WIDTH

    width = HIST_WIDTH / len(counts)
    bars = "".join(
        f'<rect x="{i * width:.1f}" y="{HIST_HEIGHT - 10 - c / top * (HIST_HEIGHT - 14):.1f}" width="{width:.1f}" '
        f'height="{c / top * (HIST_HEIGHT - 14):.1f}" fill="#90a4ae"><title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): '
        f"{c}</title></rect>"
        for i, c in enumerate(counts)
    )
    lines = "".join(
        f'<line x1="{x(q):.1f}" x2="{x(q):.1f}" y1="0" y2="{HIST_HEIGHT - 10}" stroke="#555" '
        f'stroke-dasharray="2,2"><title>quantile {q:.4g}</title></line>'
        for q in quantiles
    )
    ticks = "".join(
        f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{HIST_HEIGHT - 9}" y2="{HIST_HEIGHT}" '
        f'stroke="rgb({SIGN_RGB[sign]})"><title>{SIGN_TITLES[sign]} window peak {v:.4g}</title></line>'
        for sign, v in peaks
    )
    return (f'<svg width="{HIST_WIDTH}" height="{HIST_HEIGHT}" role="img" aria-label="activation histogram">'
            f"{bars}{lines}{ticks}</svg>")


def _examples_html(profile: Mapping[str, Any]) -> str:
    """The candidate's activation on each token of a few D_amb prompts (coloured like the windows)."""
    rows = _plain(profile.get("example_rows"))
    if not rows:
        return ""
    all_values = [v for values in _plain(profile["example_values"]) for v in values if v is not None]
    scale = max((abs(v) for v in all_values if math.isfinite(v)), default=0.0)
    items = "".join(
        f'<div class="w"><div class="wh">D_amb row {row}</div><div class="tok">'
        + "".join(_token(str(t), math.nan if v is None else float(v), scale) for t, v in zip(tokens, values))
        + "</div></div>"
        for row, tokens, values in zip(rows, profile["example_tokens"], _plain(profile["example_values"]))
    )
    return f'<details class="ex"><summary>on D_amb training prompts ({len(rows)})</summary>{items}</details>'


def _card_windows(windows: pd.DataFrame, signs: Sequence[str], key: tuple[int, int], id_column: str) -> str:
    """One section per sign (side by side), then the random sample collapsed: it is there to check
    simulation scores, not to read first."""
    scale = _max_abs(windows)
    sections = []
    for sign in signs:
        items = _windows_html(windows, sign, scale, key, id_column)
        sections.append(f'<div class="sign {sign}"><h4>{SIGN_TITLES[sign]}</h4>{items or NO_WINDOWS}</div>')
    body = f'<div class="signs">{"".join(sections)}</div>' if sections else ""
    bands = _windows_html(windows, QUANTILE, scale, key, id_column)
    if bands:
        count = int((windows["sign"] == QUANTILE).sum())
        body += (f'<details class="rand" open><summary>below the top: {count} activating windows at evenly '
                 f"spaced quantiles of their peak, weakest first</summary>{bands}</details>")
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
    space (else they would be invisible), newlines ↵, tabs ⇥. The empty text is a byte-fallback
    continuation (`caft.directions.windows.decode_tokens` gives the character to the run's first token)
    and shows nothing."""
    text = token.replace("\u2581", " ").replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")
    text = text.replace("\t", "⇥")
    if not text:
        return ""
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
