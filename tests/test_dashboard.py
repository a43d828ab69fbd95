"""Dashboards: structure (anchors, index, badges, sign sections), escaping, masking, self-containedness."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from caft.ablation.selection import Selection
from caft.errors import DataError
from caft.interpret.dashboard import KNOWN_BADGES, card_anchor, card_data, render_dashboard, write_dashboard

NAN = math.nan
VOID = {"meta", "br", "hr", "img", "input", "link"}
LAYERS = (3, 7)
COMPONENTS = (0, 1, 2)


def window(layer: int, component: int, sign: str, rank: int) -> dict:
    scale = 1.0 if sign == "positive" else -1.0
    tokens = ["<bos>", "▁The", " ", "<script>alert(1)</script>", "a&b", "\n", "end"]
    values = [NAN, 0.1 * scale, 0.0, 2.0 * scale * (component + 1), 0.5 * scale, 0.2 * scale, NAN]
    return {
        "layer": layer, "component": component, "sign": sign, "rank": rank, "doc": 10 + rank,
        "start": 4 * rank, "tokens": tokens, "values": values, "peak": values[3],
    }


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    windows = pd.DataFrame(
        [
            window(layer, component, sign, rank)
            for layer in LAYERS
            for component in COMPONENTS
            for sign in ("negative", "positive")
            for rank in (1, 0)
        ]
    )
    summary = pd.DataFrame(
        [
            {
                "layer": layer,
                "component": c,
                "explained_variance_ratio": 0.3 / (c + 1),
                "explanation": "he & <she>",
            }
            for layer in LAYERS
            for c in COMPONENTS
        ]
    )
    return windows, summary


SELECTIONS = {
    "manual": Selection("pca", "manual", "gender", None, {3: [2]}),
    "top": Selection("pca", "top", "gender", None, {3: [0, 1], 7: [0]}),
    "random": Selection("pca", "random", "gender", 0, {3: [2], 7: [19]}),
}


class TagChecker(HTMLParser):
    """Fails on an end tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.counts: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        innermost = self.stack[-1] if self.stack else None
        assert innermost == tag, f"</{tag}> closes <{innermost}>"
        self.stack.pop()


def card_html(html: str, layer: int, component: int) -> str:
    pattern = rf'<details class="card[^"]*" id="{card_anchor(layer, component)}"[^>]*>.*?</details>'
    match = re.search(pattern, html, re.S)
    assert match, f"no card for layer {layer} component {component}"
    return match.group(0)


def test_the_pool_wide_random_selection_gets_its_badge(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """The dashboard adapters pass only the known badge names: random-pool must be one of them."""
    windows, summary = tables
    pool = {"random-pool": Selection("pca", "random-pool", "gender", 0, {7: [0]})}
    assert "random-pool" in KNOWN_BADGES
    html = render_dashboard("gender", windows, summary, pool)
    assert '<span class="b b-random-pool">random-pool</span>' in card_html(html, 7, 0)


def test_structure_anchors_index_badges(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    html = render_dashboard("gender <PCA>", windows, summary, SELECTIONS)
    checker = TagChecker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []
    n_cards = len(LAYERS) * len(COMPONENTS)
    assert checker.counts["details"] == n_cards + len(LAYERS)
    for layer in LAYERS:
        assert f'id="L{layer}"' in html
        for component in COMPONENTS:
            anchor = card_anchor(layer, component)
            assert html.count(f'id="{anchor}"') == 1 and f'href="#{anchor}"' in html
    assert card_anchor(3, 2) == "L3-C2"
    # badges and highlighting
    badges = re.findall(r'<span class="b[^"]*">(\w+)</span>', card_html(html, 3, 2))
    assert badges == ["manual", "random"]
    assert re.findall(r'<span class="b[^"]*">(\w+)</span>', card_html(html, 7, 0)) == ["top"]
    assert 'class="b' not in card_html(html, 7, 1) and 'class="card"' in card_html(html, 7, 1)
    assert re.search(r'<a href="#L3-C2" class="sel" title="manual, random">2</a>', html)
    assert re.search(r'<a href="#L7-C1">1</a>', html)
    assert "random also selects [19] (no card)" in html
    # card fields, escaped
    assert "explained_variance_ratio</b> 0.15" in card_html(html, 3, 1)
    assert "he &amp; &lt;she&gt;" in html and "<she>" not in html
    assert "<title>gender &lt;PCA&gt;</title>" in html


def test_both_signs_ordered_by_rank(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    html = render_dashboard("t", windows, summary, SELECTIONS)
    n_cards = len(LAYERS) * len(COMPONENTS)
    assert html.count("<h4>most positive</h4>") == n_cards
    assert html.count("<h4>most negative</h4>") == n_cards
    card = card_html(html, 7, 2)
    assert card.index("most positive") < card.index("most negative")
    assert [int(r) for r in re.findall(r'<div class="wh">#(\d+)', card)] == [0, 1, 0, 1]


def test_tokens_escaped_masked_coloured(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    html = render_dashboard("t", windows, summary, SELECTIONS)
    # only the page's own script and its JSON data, in which "<" is escaped
    assert "<script>alert" not in html and html.count("<script") == 2
    assert html.count('<script type="application/json" id="caft-cards">') == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a&amp;b" in html
    assert '<span class="t m" title="masked">&lt;bos&gt;</span>' in html
    assert ">␣</span>" in html and ">↵</span>" in html and "> The</span>" in html
    card = card_html(html, 3, 1)  # max |value| 4.0 at the script token
    assert 'style="background:rgba(255,140,0,1.00)" title="4">&lt;script&gt;' in card
    assert 'style="background:rgba(30,110,255,1.00)" title="-4">&lt;script&gt;' in card
    assert 'style="background:rgba(255,140,0,0.12)" title="0.5">a&amp;b' in card
    assert '<span class="t" title="0">␣</span>' in card  # zero: no colour
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)=["'](?!#)""", html)


def test_the_template_escapes_each_value_once_and_inlines_the_package_css_and_js(
    tables: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Values reach the page only through the autoescaped template: markup in a token or a field is
    escaped exactly once (never raw, never twice), and the embedded JSON gives it back verbatim. The
    page's CSS and JS are the package's files, inlined whole."""
    windows, summary = tables
    windows.at[0, "tokens"] = [*windows.at[0, "tokens"][:-1], "<b>&\"'"]
    summary = summary.assign(explanation="<script>x</script>")
    html = render_dashboard("t", windows, summary, {})
    assert html.count(">&lt;b&gt;&amp;&#34;&#39;</span>") == 1 and "<b>&" not in html
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt;</span>" in html
    assert "&amp;lt;" not in html and "&amp;amp;" not in html
    assert card_data(html)[0]["fields"]["explanation"] == "<script>x</script>"
    templates = resources.files("caft.interpret") / "templates"
    css, js = ((templates / name).read_text(encoding="utf-8") for name in ("dashboard.css", "dashboard.js"))
    assert ".f.x{display:block" in css and f"<style>\n{css}</style>" in html
    assert "function selectionYaml()" in js and f"<script>\n{js}</script>" in html


def test_positive_only_windows_show_one_section(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    latents = windows[windows["sign"] == "positive"].rename(columns={"component": "latent"})
    latents = latents[~((latents["layer"] == 7) & (latents["latent"] == 2))]  # a card without windows
    summary = summary.rename(columns={"component": "latent"})
    html = render_dashboard("sae", latents, summary, {}, id_column="latent", card_fields=["explanation"])
    assert "most negative" not in html and html.count("most positive") == 5
    assert "no windows" in card_html(html, 7, 2) and "no windows" not in card_html(html, 7, 1)
    assert "latent 2" in html and "explained_variance_ratio" not in html


def test_deterministic_and_written(tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    windows, summary = tables
    html = render_dashboard("t", windows, summary, SELECTIONS)
    assert html == render_dashboard("t", windows, summary, SELECTIONS)
    path = tmp_path / "out" / "dashboard.html"
    write_dashboard(html, path)
    assert path.read_text(encoding="utf-8") == html


def test_input_errors(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    with pytest.raises(DataError, match=r"windows lacks column\(s\) \['peak'\]"):
        render_dashboard("t", windows.drop(columns="peak"), summary, {})
    bad = windows.copy()
    bad.at[0, "values"] = [1.0]
    with pytest.raises(DataError, match="layer 3 component 0 negative rank 1: 7 tokens but 1 values"):
        render_dashboard("t", bad, summary, {})
    with pytest.raises(DataError, match="have windows but no summary row"):
        render_dashboard("t", windows, summary[summary["layer"] == 3], {})
    with pytest.raises(DataError, match="sign must be one of"):
        render_dashboard("t", windows.assign(sign="pos"), summary, {})
    with pytest.raises(DataError, match="mix methods"):
        mixed = {"a": SELECTIONS["top"], "b": Selection("sae", "top", "g", None, {})}
        render_dashboard("t", windows, summary, mixed)
    with pytest.raises(DataError, match=r"card_fields\) lacks column\(s\) \['effect'\]"):
        render_dashboard("t", windows, summary, {}, card_fields=["effect"])


def test_report_tables_are_rendered_above_the_cards(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    report = pd.DataFrame({"layer": [4], "fvu": [0.123456], "architecture": ["<topk>"], "l0": [float("nan")]})
    html = render_dashboard("t", windows, summary, SELECTIONS, tables=[("SAE training report", report)])
    section = html[html.index("SAE training report"):]
    assert section.index("<td>0.1235</td>") < section.index(f'id="{card_anchor(LAYERS[0], 0)}"')
    assert "&lt;topk&gt;" in section and "<td>—</td>" in section


def test_random_sample_is_a_collapsed_section_after_the_top_windows(
    tables: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    windows, summary = tables
    sample = pd.DataFrame(
        [{**window(3, 1, "positive", rank), "sign": "random", "doc": 50 + rank} for rank in (2, 0, 1)]
    )
    html = render_dashboard("t", pd.concat([windows, sample], ignore_index=True), summary, SELECTIONS)
    checker = TagChecker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []
    assert html.count('<details class="rand">') == 1 and "random sample (3 windows)" in html
    card = html[html.index(f'id="{card_anchor(3, 1)}"'):html.index(f'id="{card_anchor(3, 2)}"')]
    section = card[card.index('<details class="rand">'):]
    assert card.index("most negative") < card.index("random sample")
    assert re.findall(r'<div class="wh">#(\d+) · doc (\d+)', section) == [("0", "50"), ("1", "51"), ("2", "52")]
    assert html.count("<h4>most positive</h4>") == len(LAYERS) * len(COMPONENTS)  # not a sign section
    latents = sample[["layer", "component", "rank", "doc", "start", "tokens", "values", "peak"]].assign(sign="random")
    only_random = render_dashboard("t", latents, summary, {})
    assert "most positive" not in only_random and "random sample (3 windows)" in only_random


def test_text_fields_get_their_own_wrapping_line(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    windows, summary = tables
    long = "female pronouns in hospital contexts " * 7 + "x" * 90
    summary = summary.assign(explanation=long)
    card = card_html(render_dashboard("t", windows, summary, {}), 3, 0)
    assert f'<span class="f x"><b>explanation</b> {long}</span>' in card
    assert '<span class="f"><b>explained_variance_ratio</b> 0.3</span>' in card
    html = render_dashboard("t", windows, summary, {})
    assert "overflow-wrap:anywhere" in html and ".f.x{display:block" in html


def profiles_for(summary: pd.DataFrame) -> pd.DataFrame:
    """A profiles table (`caft.directions.profiles.card_profiles` columns) with recognisable numbers."""
    rows = []
    for layer, component in zip(summary["layer"], summary["component"]):
        rows.append({
            "layer": layer, "component": component, "tokens": 100, "density": 0.5, "mean": 0.1 * component,
            "std": 1.0, "min": -2.0, "max": 3.0 + component, "quantile_levels": [0.5, 0.9],
            "quantiles": [0.0, 1.5], "hist_edges": [-2.0, 0.0, 3.0 + component], "hist_counts": [40, 60],
            "promoted": ["▁he", "<b>"], "promoted_logits": [2.5, 1.0], "suppressed": ["▁she", "x"],
            "suppressed_logits": [-3.0, -1.0], "ab_logit_diff": 0.25 * layer,
            "example_rows": [4], "example_tokens": [["<bos>", "▁The", "▁nurse"]],
            "example_values": [[NAN, 0.5, -1.0]],
        })
    return pd.DataFrame(rows)


def test_profiles_histogram_effects_examples_and_embedded_numbers(tables) -> None:
    windows, summary = tables
    summary = summary.assign(simulation_score=[NAN] + [0.5] * (len(summary) - 1))
    profiles = profiles_for(summary)
    html = render_dashboard("t", windows, summary, SELECTIONS, profiles=profiles)
    checker = TagChecker()
    checker.feed(html)
    assert checker.stack == []
    card = card_html(html, 7, 1)
    assert card.count("<rect") == 2 and card.count('stroke-dasharray="2,2"') == 2  # 2 bins, 2 quantile lines
    assert card.count("window peak") == 4  # 2 positive + 2 negative top windows as ticks
    assert "A−B logit difference 1.75" in card and "<code> he</code> 2.5" in card and "&lt;b&gt;" in card
    assert "D_amb row 4" in card and 'title="-1">' in card
    assert "q0.9 1.5" in card and "range [-2, 4]" in card
    # empty fields are left out of the header, present ones shown
    assert "simulation_score" not in card_html(html, 3, 0) and "simulation_score</b> 0.5" in card_html(html, 3, 1)
    # the embedded numbers are the inputs
    data = card_data(html)
    assert [(c["layer"], c["id"]) for c in data] == list(zip(summary["layer"], summary["component"]))
    by_key = {(c["layer"], c["id"]): c for c in data}
    for row in profiles.to_dict("records"):
        got = by_key[row["layer"], row["component"]]["profile"]
        for key in ("tokens", "density", "max", "quantiles", "hist_counts", "promoted", "ab_logit_diff"):
            assert got[key] == row[key]
    assert by_key[3, 2]["selections"] == ["manual", "random"]
    assert by_key[3, 0]["fields"]["simulation_score"] is None
    # the manual selection starts ticked, sort keys are the numeric fields
    assert 'class="pick" title="tick for the selection YAML (key x)" checked>' in card_html(html, 3, 2)
    assert "checked>" not in card_html(html, 3, 1).split("</summary>")[0].replace('id="desc" checked', "")
    assert '<option value="explained_variance_ratio">' in html and '<option value="explanation">' not in html


def test_quantile_windows_are_an_open_section_weakest_first(tables) -> None:
    windows, summary = tables
    bands = pd.DataFrame([{**window(3, 0, "positive", rank), "sign": "quantile", "doc": 70 + rank,
                           "peak": 0.5 * (rank + 1)} for rank in (1, 0)])
    html = render_dashboard("t", pd.concat([windows, bands], ignore_index=True), summary, SELECTIONS)
    card = card_html(html, 3, 0)
    assert '<details class="rand" open><summary>below the top: 2 activating windows' in card
    section = card[card.index("below the top"):]
    assert re.findall(r'<div class="wh">#(\d+) · doc (\d+)', section)[:2] == [("0", "70"), ("1", "71")]
    assert "below the top" not in card_html(html, 3, 1)
    assert "quantile" not in card_html(html, 7, 0)
