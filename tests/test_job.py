"""The adapter plumbing every script shares (`caft.job`) and the computed library-code tracking
(`caft.tracking`): rule → script → stage function by name, and every module a script runs tracked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from caft.errors import DataError
from caft.job import TRACE_ENV, job
from caft.tracking import caft_modules_of, imported_modules, stage_function_modules

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)
REUSED = re.compile(r"^use rule (\w+) as (\w+) with:\n(.*?)(?=^\S|\Z)", re.M | re.S)
TARGETS = {"all", "em"}
"""Rules that only collect targets: no script."""


def fake_job(tmp_path: Path, threads: int = 1) -> SimpleNamespace:
    return SimpleNamespace(log=[str(tmp_path / "logs" / "rule.log")], threads=threads, rule="my_rule")


def test_job_logs_to_the_rule_log_uses_its_threads_and_ends_user_errors_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TRACE_ENV, raising=False)
    before = torch.get_num_threads()
    try:
        with job(fake_job(tmp_path, threads=1)) as log:
            log.info("hello from the stage")
            assert torch.get_num_threads() == 1
        assert "hello from the stage" in (tmp_path / "logs" / "rule.log").read_text()
        with pytest.raises(SystemExit) as exit_info, job(fake_job(tmp_path)):
            raise DataError("table.csv: row 3 lacks a question")
        assert exit_info.value.code == 1
        assert "ERROR: table.csv: row 3 lacks a question" in capsys.readouterr().err
        assert "row 3 lacks a question" in (tmp_path / "logs" / "rule.log").read_text()
    finally:
        torch.set_num_threads(before)


def test_job_records_the_package_code_its_stage_ran_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(TRACE_ENV, str(tmp_path / "trace"))
    from caft.config import pair_id

    with job(fake_job(tmp_path)):
        pair_id("verbs", "sports")
    (trace,) = (tmp_path / "trace").glob("my_rule.*.txt")
    ran = trace.read_text().split()
    assert str(ROOT / "src" / "caft" / "config.py") in ran
    assert all(Path(path).is_relative_to(ROOT / "src" / "caft") for path in ran)


def rules_by_name() -> dict[str, tuple[str, str]]:
    """rule name -> (its rules/<file>.smk stem, its body)."""
    rules = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        rules |= {name: (smk.stem, body) for name, body in RULE.findall(smk.read_text())}
    return rules


def test_rule_script_and_stage_function_share_one_name():
    """rules/<file>.smk: rule X runs workflow/scripts/X.py, which calls caft.stages.<file>.X and tracks
    the code of that script."""
    rules = rules_by_name()
    assert set(rules) - TARGETS == {path.stem for path in SCRIPTS.glob("*.py")}
    for name, (phase, body) in rules.items():
        if name in TARGETS:
            continue
        assert f'code=library_code("{name}")' in body, f"rule {name} does not track its script's code"
        assert f'script_of("{name}")' in body, f"rule {name} does not run workflow/scripts/{name}.py"
        assert f"from caft.stages.{phase} import {name}\n" in (SCRIPTS / f"{name}.py").read_text(), (
            f"workflow/scripts/{name}.py should call caft.stages.{phase}.{name}"
        )
        assert (ROOT / "src" / "caft" / "stages" / f"{phase}.py").is_file()


def test_reused_rules_keep_the_name_of_what_they_run():
    """`use rule X as em_X with:` (the EM chain on its own paths): X is a rule with a script, and the
    reused rule tracks X's code — the name says which stage it runs."""
    rules = rules_by_name()
    reused = [match for smk in sorted((ROOT / "rules").glob("*.smk")) for match in REUSED.findall(smk.read_text())]
    assert reused
    for original, name, body in reused:
        assert name == f"em_{original}" and original in rules, name
        assert f'code=library_code("{original}")' in body or "input:" not in body, name


def test_tracked_code_holds_every_module_a_script_imports():
    for script in SCRIPTS.glob("*.py"):
        tracked = caft_modules_of(script, ROOT / "src")
        for module in imported_modules(script):
            path = ROOT / "src" / Path(*module.split("."))
            files = [path.with_suffix(".py"), path / "__init__.py"]
            if any(f.is_file() for f in files):
                assert any(f in tracked for f in files), f"{script.name} imports {module}, which is not tracked"


def test_a_stage_function_tracks_only_the_library_code_it_uses():
    def tracked(rule: str) -> set[str]:
        return {str(p.relative_to(ROOT / "src" / "caft")) for p in caft_modules_of(SCRIPTS / f"{rule}.py", ROOT / "src")}

    assert {"stages/pca.py", "directions/moments.py", "model/hooks.py"} <= tracked("pca_moments")
    assert "interpret/dashboard.py" not in tracked("pca_moments")
    assert "interpret/dashboard.py" in tracked("pca_dashboard")
    assert {"finetune/training.py", "finetune/engine.py", "directions/sae_folders.py"} <= tracked("finetune")
    assert "directions/saes.py" not in tracked("finetune")  # SAE training code reruns no fine-tune
    # package data a module declares (templates, tables) is tracked with it
    assert {"interpret/templates/dashboard.html.j2", "interpret/templates/dashboard.css"} <= tracked("pca_dashboard")
    assert "data/builtin/sports_athletes.csv" in tracked("source_table")
    assert {"em/data/code_tasks.yaml", "em/data/advice_tasks.yaml", "em/templated.py"} <= tracked("em_data")
    # fine-tunes encode chats but never generate them: editing the templates reruns no fine-tune
    for rule in ("finetune", "em_finetune"):
        assert "em/chat_data.py" in tracked(rule) and not {"em/codegen.py", "em/advicegen.py"} & tracked(rule)


def test_stage_function_modules_follow_local_helpers_constants_and_aliases(tmp_path):
    stage = tmp_path / "stage.py"
    stage.write_text(
        "import caft.errors as errors\n"
        "from caft.a import helper_a\n"
        "from caft.b import B\n"
        "from caft.c import unused\n"
        "LIMIT = B\n"
        "def _helper():\n    return helper_a() or errors\n"
        "def stage(x: int = LIMIT):\n    return _helper()\n"
    )
    assert stage_function_modules(stage, "stage") == {"caft.a", "caft.b", "caft.errors"}
    with pytest.raises(ValueError, match="no function 'missing'"):
        stage_function_modules(stage, "missing")


def test_stages_never_import_other_stages():
    for stage in (ROOT / "src" / "caft" / "stages").glob("*.py"):
        others = {m for m in imported_modules(stage) if m.startswith("caft.stages")}
        assert not others, f"{stage.name} imports {sorted(others)}: shared code belongs in the library"


def test_benchmarks_import_what_the_package_has():
    """The benchmark scripts are not run by the suite: their package imports must still resolve."""
    import ast
    import importlib

    for script in (ROOT / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("caft"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"{script.name}: {node.module} has no {missing}"


def test_tracking_sees_an_edit_made_after_a_file_was_read(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from caft.config import x\n")
    assert imported_modules(module) == {"caft.config", "caft.config.x"}
    module.write_text("import caft.errors  # edited\n")
    assert imported_modules(module) == {"caft.errors"}


PARSE_IMPORT = re.compile(r"^(?:from (caft[\w.]*) import|import (caft[\w.]*))", re.M)


def test_parsing_the_workflow_imports_no_torch():
    """Every `snakemake` call (each dry run, each SLURM job) parses the workflow: the package modules the
    rule files import must not pull in torch, transformers or sae-lens (1–8 s each)."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "rules").rglob("*.smk"))]
    modules = sorted({a or b for path in files for a, b in PARSE_IMPORT.findall(path.read_text())})
    assert "caft.tracking" in modules and "caft.ablation.selection" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print(sorted({'torch', 'transformers', 'sae_lens'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
