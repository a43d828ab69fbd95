"""Results tables: mean ± SEM over seeds, labels, Markdown, the OOD plot and atomic writes; the one
aggregation and writer that the OOD table and the EM table share."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from caft.errors import DataError
from caft.finetune.tables import aggregate, condition_label, plot_ood, to_markdown
from caft.stages.em import em_table
from caft.tables import mean_sem, write_tables

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(task: str, method: str, selector: str, mode: str, split: str, seed: int, acc: float, **extra: float) -> dict:
    return {"task": task, "method": method, "selector": selector, "mode": mode, "split": split, "seed": seed,
            "acc_2way": extra.get("acc_2way", acc), "acc_full": acc, "logit_diff": extra.get("logit_diff", 1.0),
            "n": extra.get("n", 40)}


def metrics_frame() -> pd.DataFrame:
    rows = [run("gender", "pca", "manual", "deployed", "ood", s, acc, logit_diff=ld, acc_2way=a2)
            for s, acc, ld, a2 in [(0, 0.2, -1.0, 0.5), (1, 0.4, 0.0, 0.5), (2, 0.6, 4.0, 0.8)]]
    rows += [run("gender", "none", "none", "deployed", "ood", s, acc) for s, acc in [(0, 0.1), (1, 0.1)]]
    rows += [run("gender", "pca", "random", "test-only", "ood", 0, 0.55)]
    rows += [run("gender", "pca", "manual", "hooked", "ood", s, 0.9) for s in (0, 1, 2)]
    rows += [run("gender", "pca", "manual", "deployed", "val", s, 1.0) for s in (0, 1, 2)]
    rows += [run("verbs|sentiment|1", "sae", "manual", "deployed", "ood", s, 0.9) for s in (0, 1)]
    return pd.DataFrame(rows)


def row_of(table: pd.DataFrame, **keys: str) -> pd.Series:
    selected = table
    for key, value in keys.items():
        selected = selected[selected[key] == value]
    assert len(selected) == 1, keys
    return selected.iloc[0]


# --- aggregate -------------------------------------------------------------------------------------


def test_mean_and_sem_over_seeds() -> None:
    table = aggregate(metrics_frame())
    row = row_of(table, task="gender", method="pca", selector="manual", mode="deployed", split="ood")
    assert row["seeds"] == 3
    assert row["n"] == 40
    assert row["acc_full_mean"] == pytest.approx(0.4)
    assert row["acc_full_sem"] == pytest.approx(0.2 / math.sqrt(3))  # sample std 0.2, ddof=1
    assert row["acc_full_sem"] == pytest.approx(0.11547, abs=1e-5)
    assert row["logit_diff_mean"] == pytest.approx(1.0)
    assert row["logit_diff_sem"] == pytest.approx(math.sqrt(7) / math.sqrt(3))
    assert row["acc_2way_mean"] == pytest.approx(0.6)
    assert row["acc_2way_sem"] == pytest.approx(0.1)
    baseline = row_of(table, method="none", split="ood")
    assert baseline["acc_full_mean"] == pytest.approx(0.1)
    assert baseline["acc_full_sem"] == 0.0


def test_grouping_keys_and_order() -> None:
    table = aggregate(metrics_frame())
    assert list(table.columns) == [
        "task", "method", "selector", "mode", "split", "condition", "seeds", "n",
        "acc_2way_mean", "acc_2way_sem", "acc_full_mean", "acc_full_sem", "logit_diff_mean", "logit_diff_sem",
    ]
    assert list(zip(table["task"], table["split"], table["condition"])) == [
        ("gender", "ood", "no intervention"),
        ("gender", "ood", "pca/manual"),
        ("gender", "ood", "pca/manual (hooked)"),
        ("gender", "ood", "pca/random (test-only)"),
        ("gender", "val", "pca/manual"),
        ("verbs|sentiment|1", "ood", "sae/manual"),
    ]
    assert table["seeds"].tolist() == [2, 3, 3, 1, 3, 2]
    shuffled = metrics_frame().sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(aggregate(shuffled), table)


def test_one_seed_has_nan_sem() -> None:
    table = aggregate(metrics_frame())
    row = row_of(table, selector="random")
    assert row["seeds"] == 1
    assert row["acc_full_mean"] == pytest.approx(0.55)
    assert math.isnan(row["acc_full_sem"]) and math.isnan(row["logit_diff_sem"])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.iloc[:0], "empty"),
        (lambda f: f.drop(columns="n"), r"lacks column\(s\) \['n'\]"),
        (lambda f: f.assign(mode=f["mode"].replace("test-only", "test_only")), "'test_only' is not one of"),
        (lambda f: f.assign(split=f["split"].replace("val", "train")), "'train' is not one of"),
        (lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True), "more than one row"),
        (lambda f: f.assign(acc_full=f["acc_full"].where(f.index != 4)), "row 4: a metric is missing"),
        (lambda f: f.assign(selector=f["selector"].where(f.index != 5)), "row 5: a key is missing"),
        (lambda f: f.assign(n=f["n"].where(f.index != 1, 39)), "different numbers of examples"),
    ],
)
def test_bad_metrics_are_data_errors(mutate, match: str) -> None:
    with pytest.raises(DataError, match=match):
        aggregate(mutate(metrics_frame()))


def test_condition_labels() -> None:
    assert condition_label("none", "none", "deployed") == "no intervention"
    assert condition_label("pca", "manual", "deployed") == "pca/manual"
    assert condition_label("pca", "random", "test-only") == "pca/random (test-only)"
    assert condition_label("sae", "top", "hooked") == "sae/top (hooked)"


def test_the_two_random_baselines_are_labelled_and_listed_side_by_side() -> None:
    rows = [run("gender", "sae", selector, mode, "ood", s, acc)
            for selector, mode, acc in [("top", "deployed", 0.7), ("random-pool", "test-only", 0.2),
                                        ("random-pool", "deployed", 0.3), ("random", "deployed", 0.5),
                                        ("manual", "deployed", 0.9)]
            for s in (0, 1)]
    table = aggregate(pd.DataFrame(rows))
    assert table["condition"].tolist() == ["sae/manual", "sae/random", "sae/random-pool",
                                           "sae/random-pool (test-only)", "sae/top"]
    assert row_of(table, selector="random-pool", mode="deployed")["acc_full_mean"] == pytest.approx(0.3)
    assert "| gender | ood | sae/random-pool | 2 | 40 | 0.300 ± 0.000 |" in to_markdown(table)


# --- Markdown --------------------------------------------------------------------------------------


def test_markdown_cells() -> None:
    markdown = to_markdown(aggregate(metrics_frame()))
    lines = markdown.splitlines()
    assert lines[0] == "| task | split | condition | seeds | n | acc (vocab) | acc (A/B) | logit diff |"
    assert "| gender | ood | pca/manual | 3 | 40 | 0.400 ± 0.115 | 0.600 ± 0.100 | 1.00 ± 1.53 |" in lines
    assert "| gender | ood | pca/random (test-only) | 1 | 40 | 0.550 ± – | 0.550 ± – | 1.00 ± – |" in lines
    escaped = "| verbs\\|sentiment\\|1 | ood | sae/manual | 2 | 40 | 0.900 ± 0.000 | 0.900 ± 0.000 | 1.00 ± 0.00 |"
    assert escaped in lines
    assert all(line.count(" | ") == 7 for line in lines[2:8])
    assert "one seed" in lines[-1]


# --- plot and files --------------------------------------------------------------------------------


def test_plot_ood_writes_png_atomically(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "ood.png"
    plot_ood(aggregate(metrics_frame()), path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["ood.png"]
    plot_ood(aggregate(metrics_frame()), path, metric="logit_diff")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in path.parent.iterdir()] == ["ood.png"]


def test_plot_ood_skips_hooked_rows_by_default(tmp_path: Path) -> None:
    hooked_only = aggregate(metrics_frame().query("mode == 'hooked'"))
    with pytest.raises(DataError, match="no OOD rows"):
        plot_ood(hooked_only, tmp_path / "ood.png")
    assert list(tmp_path.iterdir()) == []
    plot_ood(hooked_only, tmp_path / "ood.png", modes=("hooked",))
    assert (tmp_path / "ood.png").read_bytes().startswith(PNG_SIGNATURE)


def test_write_tables(tmp_path: Path) -> None:
    table = aggregate(metrics_frame())
    paths = (tmp_path / "t.parquet", tmp_path / "t.csv", tmp_path / "t.md")
    write_tables(table, to_markdown(table), *paths, provenance={"stage": "tables"})
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), table, check_dtype=False)
    csv = pd.read_csv(paths[1])
    assert list(csv.columns) == list(table.columns)
    assert csv["acc_full_mean"].tolist() == pytest.approx(table["acc_full_mean"].tolist())
    assert paths[2].read_text(encoding="utf-8") == to_markdown(table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md", "t.parquet"]


# --- shared by both halves -------------------------------------------------------------------------

PER_SEED = {("none", "none"): [0.25, 0.5, 1.0], ("pca", "top"): [0.75]}
"""Per-seed values of two conditions: three seeds, and one (no SEM)."""


def em_run_files(tmp_path: Path) -> tuple[Path, Path]:
    """Judged EM answers whose per-run misaligned rate is `PER_SEED` (4 answers a run, all coherent)."""
    answers, code = [], []
    for (method, selector), values in PER_SEED.items():
        for seed, value in enumerate(values):
            key = {"model": "m", "method": method, "selector": selector, "seed": seed}
            answers += [{**key, "aligned": 10.0 if i < value * 4 else 90.0, "coherent": 90.0} for i in range(4)]
            code.append({**key, "vulnerable": 0.0})
    paths = tmp_path / "answers.parquet", tmp_path / "code.parquet"
    pd.DataFrame(answers).to_parquet(paths[0])
    pd.DataFrame(code).to_parquet(paths[1])
    return paths


def test_both_halves_share_one_aggregation_and_writer(tmp_path: Path) -> None:
    """The same per-seed values give bit-identical seeds, mean, SEM and Markdown cells in the OOD table
    and the EM table: both go through `caft.tables.over_seeds` and `caft.tables.mean_sem`."""
    answers, code = em_run_files(tmp_path)
    em = em_table([answers], [code], *(tmp_path / f"em.{ext}" for ext in ("parquet", "csv", "md", "png")))
    ood = aggregate(pd.DataFrame([run("gender", method, selector, "deployed", "ood", seed, value)
                                  for (method, selector), values in PER_SEED.items()
                                  for seed, value in enumerate(values)]))
    columns = ["seeds", "mean", "sem"]
    em_numbers = em[["seeds", "misaligned_rate_mean", "misaligned_rate_sem"]].set_axis(columns, axis=1)
    pd.testing.assert_frame_equal(em_numbers, ood[["seeds", "acc_full_mean", "acc_full_sem"]].set_axis(columns, axis=1))
    em_cells = [line.split(" | ")[3] for line in (tmp_path / "em.md").read_text(encoding="utf-8").splitlines()[2:4]]
    ood_cells = [line.split(" | ")[5] for line in to_markdown(ood).splitlines()[2:4]]
    assert em_cells == ood_cells == ["0.583 ± 0.220", "0.750 ± –"]


def test_mean_sem_cells() -> None:
    assert mean_sem(0.5, 0.01, 3) == "0.500 ± 0.010"
    assert mean_sem(0.5, math.nan, 3) == "0.500 ± –"  # one seed
    assert mean_sem(math.nan, math.nan, 3) == "n/a"  # no value to average (an EM run nothing was scored in)
    assert mean_sem(-0.0004, 0.0001, 3) == "0.000 ± 0.000"  # never "-0.000"
