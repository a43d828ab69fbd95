"""config/schema.yaml is the one source of defaults: every default a config dataclass has is its key's
schema default (the value Snakemake's validate() fills in), nested dataclasses included.

A field without a schema default may only default to "not given" (None, an empty tuple): the code must not
invent a value the schema does not state. A change to one side without the other fails here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import caft
from caft.ablation.selection import AutoSelectConfig, SelectorConfig
from caft.config import SectionConfig
from caft.config_docs import resolve
from caft.data.corpus import CorpusConfig, SourceConfig
from caft.data.sources import SourceSpec
from caft.data.tasks import FrameTaskConfig, McmcSplitConfig
from caft.directions.attribution import AttributionConfig
from caft.directions.moments import PcaMomentsConfig
from caft.directions.oracle import OracleConfig
from caft.directions.pca import PcaComponentsConfig
from caft.directions.saes import SaeSourceConfig, SaeTrainConfig
from caft.directions.windows import WindowsConfig
from caft.em.candidates import EmSaeCandidatesConfig
from caft.em.chat_sources import ChatSource
from caft.em.sampling import SamplingConfig
from caft.em.sft import EM_LORA, SftConfig
from caft.finetune.engine import LoraSettings
from caft.finetune.evaluation import EvaluationConfig
from caft.finetune.survey import SurveyCriteria
from caft.finetune.training import TrainConfig
from caft.interpret.clients import OpenAICompatibleClient
from caft.interpret.explanations import ExplainConfig
from caft.model.loading import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text(encoding="utf-8"))
NOT_GIVEN = (None, ())


# dataclass -> (its section as a dotted path: `<name>` a map entry, `[]` a list element; fields it takes
# from elsewhere or that are no config key, each with the reason)
SECTIONS: dict[type, tuple[str, dict[str, str]]] = {
    ModelSpec: ("model", {}),
    SourceSpec: ("sources.<name>", {}),
    FrameTaskConfig: ("frame_tasks.<name>", {}),
    McmcSplitConfig: ("mcmc.splits", {}),
    TrainConfig: ("finetune", {"epochs": "per task kind: test_train_config_epochs_are_each_kinds"}),
    LoraSettings: ("finetune.lora", {"use_rslora": "EM only (em.finetune.lora, EM_LORA)",
                                     "merge": "EM only (em.finetune.lora, EM_LORA)"}),
    EvaluationConfig: ("evaluation", {}),
    SurveyCriteria: ("survey", {}),
    CorpusConfig: ("corpus", {"sources": "SourceConfig objects: test_corpus_sources_default"}),
    SourceConfig: ("corpus.sources[]", {}),
    PcaComponentsConfig: ("pca", {}),
    PcaMomentsConfig: ("pca", {}),
    WindowsConfig: ("windows", {}),
    AutoSelectConfig: ("selection.auto", {}),
    ExplainConfig: ("explanations", {}),
    OpenAICompatibleClient: ("explanations.client", {"record": "the job's record, no config key"}),
    SaeSourceConfig: ("saes", {"train": "None unless from: train; SaeTrainConfig is walked as saes.train"}),
    SaeTrainConfig: ("saes.train", {}),
    AttributionConfig: ("attribution", {}),
    OracleConfig: ("oracle", {}),
    ChatSource: ("em.data.source", {}),
    SftConfig: ("em.finetune", {}),
    SamplingConfig: ("em.sampling", {}),
    EmSaeCandidatesConfig: ("em.sae_candidates", {}),
}
NOT_SECTIONS = {SelectorConfig: "what one selector variant reads, assembled by the rules from several keys"}
RENAMED = {(SourceSpec, "origin"): "from", (SourceConfig, "origin"): "from", (ChatSource, "origin"): "from",
           (SaeSourceConfig, "source"): "from"}
"""Fields named apart from their key: a kind-keyed section's ``from``."""


def section_keys(path: str) -> dict[str, dict[str, Any]]:
    """Key -> its resolved schema at a dotted path: the object's own properties and those of every
    variant (anyOf/oneOf) and every kind's ``then`` clause (a key defined by two kinds must agree)."""
    node: dict[str, Any] = resolve(SCHEMA, SCHEMA)
    for part in path.split("."):
        for step in _steps(part):
            node = resolve(_object(node)[step] if step not in ("<name>", "[]") else
                           _object(node)["additionalProperties" if step == "<name>" else "items"], SCHEMA)
    return _keys(node)


def _steps(part: str) -> list[str]:
    return [part[:-2], "[]"] if part.endswith("[]") else [part]


def _object(node: dict[str, Any]) -> dict[str, Any]:
    """The object schema of a node, and its properties as keys (a nullable object is an anyOf)."""
    for variant in node.get("anyOf", []):
        variant = resolve(variant, SCHEMA)
        if "properties" in variant:
            node = variant
    return {**node.get("properties", {}), **{k: v for k, v in node.items() if k in ("additionalProperties", "items")}}


def _keys(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = {}
    branches = [node] + [resolve(v, SCHEMA) for v in node.get("anyOf", [])]
    branches += [resolve(clause.get("then", {}), SCHEMA) for clause in node.get("allOf", [])]
    for branch in branches:
        for key, child in branch.get("properties", {}).items():
            child = resolve(child, SCHEMA)
            if key in keys and keys[key].get("default") != child.get("default"):
                raise AssertionError(f"key {key!r} has two defaults at one path")
            keys.setdefault(key, child)
    return keys


def plain(value: Any) -> Any:
    """Tuples as the lists YAML gives."""
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    return value


def field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def mismatches(cls: type, path: str, skip: dict[str, str]) -> list[str]:
    """What differs between `cls`'s field defaults and the schema's defaults at `path`."""
    keys = section_keys(path)
    found = []
    for field in dataclasses.fields(cls):
        if not field.init or field.name in skip:
            continue
        key = RENAMED.get((cls, field.name), field.name)
        if key not in keys:
            found.append(f"{cls.__name__}.{field.name}: no key {path}.{key} in the schema")
            continue
        default = field_default(field)
        if default is dataclasses.MISSING:
            continue
        if dataclasses.is_dataclass(default):  # a nested section given as an instance (EM_LORA)
            found += [f"{cls.__name__}.{field.name}.{m}" for m in instance_mismatches(default, f"{path}.{key}")]
        elif "default" in keys[key]:
            if plain(default) != keys[key]["default"]:
                found.append(f"{cls.__name__}.{field.name} = {default!r}, schema {path}.{key}: "
                             f"{keys[key]['default']!r}")
        elif default not in NOT_GIVEN:
            found.append(f"{cls.__name__}.{field.name} = {default!r}, but {path}.{key} has no schema default")
    return found


def instance_mismatches(value: Any, path: str) -> list[str]:
    keys = section_keys(path)
    return [f"{field.name} = {getattr(value, field.name)!r}, schema {keys.get(field.name, {}).get('default')!r}"
            for field in dataclasses.fields(value)
            if plain(getattr(value, field.name)) != keys.get(field.name, {}).get("default")]


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda cls: cls.__name__)
def test_every_dataclass_default_is_the_schema_default(cls: type) -> None:
    path, skip = SECTIONS[cls]
    assert not mismatches(cls, path, skip)


def test_nested_defaults_are_the_schemas() -> None:
    """EM_LORA is `em.finetune.lora`'s defaults; `saes.train` and `finetune.lora` are walked above."""
    assert not instance_mismatches(EM_LORA, "em.finetune.lora")
    assert SaeSourceConfig.__dataclass_fields__["train"].default is None  # only `from: train` builds one


def test_train_config_epochs_are_each_kinds() -> None:
    epochs = section_keys("finetune.epochs")
    assert TrainConfig.epochs == epochs["frames"]["default"] == epochs["mcmc"]["default"]
    assert TrainConfig.from_config({}, "frames").epochs == TrainConfig.from_config({}, "mcmc").epochs


def test_corpus_sources_default() -> None:
    default = section_keys("corpus")["sources"]["default"]
    assert CorpusConfig.from_config({"sources": default}) == CorpusConfig()


def test_the_endpoint_defaults_are_the_clients_for_judges_too() -> None:
    judge = section_keys("em.judges.<name>")
    client = section_keys("explanations.client")
    for key in ("api_key_env", "timeout", "max_concurrency", "max_retries", "backoff_initial", "backoff_max"):
        assert judge[key]["default"] == client[key]["default"] == field_default(
            OpenAICompatibleClient.__dataclass_fields__[key])


def test_the_responses_are_sampled_with_their_own_defaults() -> None:
    """`em.responses` holds the `em.sampling` keys (one SamplingConfig reads both) with defaults of its own."""
    responses, sampling = section_keys("em.responses"), section_keys("em.sampling")
    assert set(responses) - {"prompts"} == set(sampling) == {f.name for f in dataclasses.fields(SamplingConfig)}
    assert all("default" in spec for spec in responses.values())


def test_every_config_dataclass_is_walked() -> None:
    """A new SectionConfig (or a dataclass built from a section) joins SECTIONS or NOT_SECTIONS."""
    built = set()
    for info in pkgutil.walk_packages(caft.__path__, "caft."):
        module = importlib.import_module(info.name)
        built |= {cls for cls in vars(module).values()
                  if isinstance(cls, type) and cls.__module__ == info.name and dataclasses.is_dataclass(cls)
                  and (issubclass(cls, SectionConfig) or "from_config" in vars(cls))}
    assert built <= set(SECTIONS) | set(NOT_SECTIONS)


def test_the_walker_sees_a_divergence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEMA["properties"]["windows"]["properties"]["logit_tokens"], "default", 9)
    assert mismatches(WindowsConfig, "windows", {}) == ["WindowsConfig.logit_tokens = 8, schema windows.logit_tokens: 9"]
    monkeypatch.setitem(SCHEMA["properties"]["saes"]["properties"]["train"]["properties"]["width"], "default", 7)
    assert mismatches(SaeTrainConfig, "saes.train", {})
