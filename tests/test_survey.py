"""The task survey's filter and table, on hand-made aggregated metrics."""

import math

import pandas as pd
import pytest

from caft.errors import DataError
from caft.finetune.survey import SurveyCriteria, eligibility, paper_filter, survey_markdown, survey_table

CRITERIA = SurveyCriteria(max_none_ood=0.9, min_none_val=0.9, min_skyline_ood=0.9)


def aggregated(rows: dict[tuple[str, str, str], float]) -> pd.DataFrame:
    """`caft.finetune.tables.aggregate`-shaped rows from {(task, method, split): A/B accuracy} (one seed)."""
    return pd.DataFrame([
        {"task": task, "method": method, "selector": method, "mode": "deployed", "split": split, "seeds": 1,
         "acc_2way_mean": value, "acc_2way_sem": math.nan}
        for (task, method, split), value in rows.items()
    ])


RESULTS = {
    # follows the spurious concept, the skyline learns the intended one: eligible
    ("v_s_1", "none", "val"): 1.0, ("v_s_1", "none", "ood"): 0.05,
    ("v_s_1", "skyline", "val"): 0.95, ("v_s_1", "skyline", "ood"): 0.94,
    # the other index of the same pair follows its intended concept: fails the paper's filter
    ("v_s_0", "none", "val"): 1.0, ("v_s_0", "none", "ood"): 0.95,
    # prefers the shortcut, but the skyline does not learn the rule either
    ("p_v_1", "none", "val"): 1.0, ("p_v_1", "none", "ood"): 0.0,
    ("p_v_1", "skyline", "val"): 0.6, ("p_v_1", "skyline", "ood"): 0.55,
    # not learned at all
    ("x_y_0", "none", "val"): 0.5, ("x_y_0", "none", "ood"): 0.5,
}
CONCEPTS = {"v_s_1": ("sentiment", "verbs"), "v_s_0": ("verbs", "sentiment"), "p_v_1": ("verbs", "pronouns"),
            "x_y_0": ("x", "y")}


def test_filter_keeps_learned_tasks_below_the_paper_threshold():
    table = aggregated(RESULTS)
    assert paper_filter(table, list(CONCEPTS), CRITERIA) == ["v_s_1", "p_v_1"]
    with pytest.raises(DataError, match="no no-intervention"):
        paper_filter(table, ["v_s_1", "missing_task"], CRITERIA)


def test_table_says_which_rule_the_model_follows_and_which_tasks_are_eligible():
    table = survey_table(aggregated(RESULTS), CONCEPTS, CRITERIA).set_index("task")
    assert table["follows"].to_dict() == {"v_s_1": "verbs", "v_s_0": "verbs", "p_v_1": "pronouns",
                                          "x_y_0": "neither (not learned)"}
    assert table["eligible"].to_dict() == {"v_s_1": True, "v_s_0": False, "p_v_1": False, "x_y_0": False}
    assert math.isnan(table.loc["v_s_0", "skyline_ood"])
    record = eligibility(table.reset_index(), CRITERIA)
    assert record["eligible"] == ["v_s_1"]
    assert "skyline_ood" not in record["tasks"]["v_s_0"]  # not run: omitted, not NaN in the JSON
    markdown = survey_markdown(table.reset_index())
    assert "| v_s_1 | sentiment | verbs | 1 | 1.000 | 0.050 | 0.950 | 0.940 | verbs | yes |" in markdown
    assert "not run" in markdown


def test_a_filtered_task_without_its_skyline_is_an_error():
    missing = {key: value for key, value in RESULTS.items() if key[:2] != ("v_s_1", "skyline")}
    with pytest.raises(DataError, match="no skyline result"):
        survey_table(aggregated(missing), CONCEPTS, CRITERIA)


def test_a_skyline_right_on_ood_but_wrong_on_val_learned_the_inverse_shortcut_and_is_not_eligible():
    """Seen on Gemma 3 270M with the anti-correlated skyline: val 0.0, OOD 1.0 (the model avoided the
    option with the spurious question's correct answer): that is no proof the intended rule is learnable."""
    inverse = {**RESULTS, ("v_s_1", "skyline", "val"): 0.0, ("v_s_1", "skyline", "ood"): 1.0}
    table = survey_table(aggregated(inverse), CONCEPTS, CRITERIA).set_index("task")
    assert not table.loc["v_s_1", "eligible"]
    lenient = SurveyCriteria(max_none_ood=0.9, min_none_val=0.9, min_skyline_ood=0.9, min_skyline_val=0.0)
    assert survey_table(aggregated(inverse), CONCEPTS, lenient).set_index("task").loc["v_s_1", "eligible"]
    assert eligibility(table.reset_index(), CRITERIA)["criteria"]["skyline_val_at_least"] == 0.9
