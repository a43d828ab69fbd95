"""docs/configuration.md is generated from config/schema.yaml, and every schema key is documented."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from caft import config_docs
from caft.config_docs import render_configuration

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "config" / "schema.yaml"
DOCS_PATH = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rendered(schema: dict) -> str:
    return render_configuration(schema)


def table_rows(text: str) -> dict[str, list[str]]:
    """key path -> its row's cells (type, default, description), from every table of the reference."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def undocumented(node: Any, path: str) -> list[str]:
    """Dotted paths of the properties below ``node`` without a non-empty description. Walks properties,
    map entries (additionalProperties), list items, oneOf/anyOf/allOf variants and $defs; not the
    ``if``/``then`` clauses, whose ``properties`` are conditions rather than keys."""
    if not isinstance(node, dict):
        return []

    def described(child: Any) -> bool:
        if not isinstance(child, dict):
            return True
        return "$ref" in child or bool(str(child.get("description") or "").strip())  # a $ref's target is checked

    missing = []
    for key, child in node.get("properties", {}).items():
        child_path = f"{path}.{key}" if path else key
        if not described(child):
            missing.append(child_path)
        missing += undocumented(child, child_path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        if not described(extra):
            missing.append(f"{path}.<name>")
        missing += undocumented(extra, f"{path}.<name>")
    items = node.get("items")
    if isinstance(items, dict):
        if items.get("properties") and not described(items):
            missing.append(f"{path}[]")
        missing += undocumented(items, f"{path}[]")
    for keyword in ("prefixItems", "oneOf", "anyOf", "allOf"):
        for variant in node.get(keyword, []):
            if keyword == "allOf" and ("if" in variant or "then" in variant):
                continue
            missing += undocumented(variant, path)
    for name, definition in node.get("$defs", {}).items():
        def_path = f"$defs.{name}"
        if not described(definition):
            missing.append(def_path)
        missing += undocumented(definition, def_path)
    return missing


def test_committed_reference_matches_the_schema(schema: dict, rendered: str) -> None:
    committed = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.is_file() else ""
    assert committed == rendered, (
        "docs/configuration.md is out of date with config/schema.yaml: run `python -m caft.config_docs`"
    )


def test_every_schema_property_has_a_description(schema: dict) -> None:
    missing = undocumented(schema, "")
    assert not missing, f"schema properties without a description: {missing}"


def test_the_walker_finds_missing_descriptions() -> None:
    bare = {
        "properties": {
            "a": {"type": "object", "description": "A.", "properties": {"b": {"type": "integer"}}},
            "m": {"description": "M.", "additionalProperties": {"type": "object", "properties": {"x": {}}}},
            "l": {"description": "L.", "items": {"type": "object", "properties": {"y": {"description": "Y."}}}},
            "s": {"description": "S.", "additionalProperties": {"$ref": "#/$defs/d"}},
        },
        "$defs": {"d": {"type": "object", "properties": {"z": {"type": "string"}},
                        "allOf": [{"if": {"properties": {"z": {"const": "q"}}}, "then": {"required": ["z"]}}]}},
    }
    assert undocumented(bare, "") == ["a.b", "m.<name>", "m.<name>.x", "l[]", "$defs.d", "$defs.d.z"]


def test_rows_show_defaults(schema: dict, rendered: str) -> None:
    rows = table_rows(rendered)
    lr = rows["finetune.lr"]
    assert yaml.safe_load(lr[1].strip("`")) == schema["properties"]["finetune"]["properties"]["lr"]["default"]
    assert lr[2], "finetune.lr has no description"
    max_examples = rows["mcmc.splits.max_examples"]
    assert max_examples[1] == "`2000`"
    assert yaml.safe_load(max_examples[1].strip("`")) == 2000


def test_rows_cover_maps_refs_enums_and_variants(rendered: str) -> None:
    rows = table_rows(rendered)
    assert rows["sources.<name>.from"][0] == r"`builtin \| local \| huggingface`"  # $ref to $defs.source
    path = rows["sources.<name>.path"][2]  # a kind's own key: listed under its `if`/`then` clause
    assert path.startswith("Only when `from` is `local`: ") and path.endswith(" Required.")
    assert rows["corpus.sources[].text_column"][2].startswith("Only when `from` is `local` or `huggingface`: ")
    assert rows["explanations.client.max_retries"][1] == "`8`"  # a $ref beside the clause's own keys
    assert rows["explanations.client.top_logprobs"][2].startswith("Only when `client` is `openai`: ")
    assert rows["finetune.lora.r"][1] == "`16`" and rows["finetune.lora"][0] == r"null \| object"
    assert rows["finetune.precision"][0] == r"`auto \| float32 \| bf16-autocast \| bf16`"
    assert rows["interventions.layers"][0].startswith(r"`all` \| array of integer")
    assert rows["runs.seeds"][1] == "`[0]`" and rows["model.revision"][1] == "`null`"
    assert "frame_tasks.<name>.male_profession" in rows and "explanations.queries.<name>" in rows


def test_no_design_or_readme_pointers(schema: dict, rendered: str) -> None:
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    for name, content in (("config/schema.yaml", text), ("the rendered reference", rendered)):
        assert "DESIGN" not in content, f"{name} refers to DESIGN; the reference must stand alone"
        assert "README:" not in content, f"{name} points into the README"


def test_renderer_resolves_refs_variants_and_escapes_pipes() -> None:
    schema = {
        "properties": {
            "top": {
                "description": "Top | section.",
                "type": "object",
                "properties": {
                    "pick": {
                        "description": "One of two shapes.",
                        "oneOf": [
                            {"type": "object", "properties": {
                                "kind": {"const": "a"}, "size": {"type": "integer", "description": "A's size."}}},
                            {"$ref": "#/$defs/b"},
                        ],
                    },
                    "list": {"type": "array", "description": "Items.",
                             "items": {"type": "object", "description": "An item.",
                                       "properties": {"name": {"type": "string", "description": "Its name."}}}},
                },
            },
        },
        "$defs": {"b": {"type": "object", "properties": {
            "kind": {"const": "b"}, "path": {"type": "string", "description": "B's path."}}}},
    }
    text = render_configuration(schema)
    assert text == render_configuration(schema), "the output must be deterministic"
    rows = table_rows(text)
    assert rows["top.pick"][0] == r"object \| object"
    assert rows["top.pick.size"][2] == "kind: a: A's size."
    assert rows["top.pick.path"][2] == "kind: b: B's path."
    assert rows["top.list[].name"][2] == "Its name."
    assert "Top | section." in text  # a section's description is a paragraph, not a cell


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "configuration.md"
    monkeypatch.setattr(config_docs, "DOCS_PATH", target)
    assert config_docs.main(["--check"]) == 1
    assert "python -m caft.config_docs" in capsys.readouterr().err
    assert config_docs.main([]) == 0
    assert target.read_text(encoding="utf-8") == render_configuration(config_docs.load_schema())
    assert config_docs.main(["--check"]) == 0
    target.write_text("edited by hand\n", encoding="utf-8")
    assert config_docs.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
