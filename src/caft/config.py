"""Config checks with messages that name the offending key, before Snakemake's own ``validate()``.

The JSON schema (``config/schema.yaml``) is the one source of defaults and constraints: types, bounds,
unknown keys, and the keys of each kind of a kind-keyed section (one pattern throughout: the kind key's
value in an ``allOf`` of ``if``/``then`` clauses, each ``then`` listing that kind's keys, and
``unevaluatedProperties: false``). :func:`check_schema` reports its first violation naming the key (and
the kind); :func:`check_references` covers what a schema cannot: names that must refer to other sections,
one table kind per source, keys required by another key's value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import yaml

from caft.errors import ConfigError

# method -> the selectors that can produce its directions (grows with the PCA and SAE stages).
SELECTORS: dict[str, tuple[str, ...]] = {
    "random": ("random",),
    "pca": ("manual", "top", "random", "random-pool", "auto"),
    "sae": ("manual", "top", "random", "random-pool", "auto"),  # projection on the QR of the selected decoder rows
    "sae-latent": ("manual", "top", "random", "random-pool", "auto"),  # latent ablation h − Σ z_j W_dec[j]
    "oracle": ("mean-diff", "leace"),  # the spurious concept erased with its labels: a bound, never a CAFT result
    "steer": ("manual", "top", "random", "auto"),  # preventative steering along the PCA selection (random: norm-matched)
}
STEERING = "steer"
"""The method that adds a shift along the selected PCA directions instead of ablating them."""
CONDITION_METHODS: dict[str, tuple[str, ...]] = {"pca": ("pca", STEERING), "sae": ("sae", "sae-latent")}
"""Interpretation method -> the condition methods built on its candidates and selections."""


def interpretation_method(method: str) -> str:
    """The interpretation method (pca, sae) whose selections a condition method uses; itself otherwise."""
    return next((base for base, methods in CONDITION_METHODS.items() if method in methods), method)


SEEDED_SELECTORS: tuple[str, ...] = ("random", "random-pool")
"""Selectors drawn per training seed (their variant is ``{selector}/seed{N}``): ``random``, the manual counts
per layer (layer-matched), and ``random-pool``, the manual total from the pooled candidates of every layer
(the paper's random baseline)."""
SAE_METHODS: tuple[str, ...] = ("sae", "sae-latent")
NO_INTERVENTION = "none"
MCMC_ANSWER_COLUMNS: tuple[str, str] = ("answer_a", "answer_b")
"""The split columns holding each MCMC question's letter: the intended index picks one."""
SKYLINE = "skyline"
UNHOOKED = (NO_INTERVENTION, SKYLINE)
"""Conditions without a spec: no intervention, and the skyline (same recipe, decorrelated training data)."""
EM_UNHOOKED = (NO_INTERVENTION, "fewer")
"""EM conditions without a spec: no intervention, and the same recipe stopped early (``fewer/steps<N>``)."""
TOKEN_SUMMARY = "tokens"
"""`explanations.client.client` value that summarizes windows by their peak tokens instead of asking an LLM."""


def training_mode(method: str, configured: str, unhooked: tuple[str, ...] = UNHOOKED) -> str:
    """The intervention mode a run of `method` trains under, as the rules pass it: only projections have
    modes, so runs without a spec (`unhooked`) and steering (which always shifts the forward pass) get
    "project" whatever is configured, and changing `interventions.mode` reruns neither."""
    return "project" if method in unhooked or method == STEERING else configured

T = TypeVar("T")


class SectionConfig:
    """A frozen dataclass built from its config section: `from_config` names the section (`SECTION`) in
    the error for an unknown key. Every stage takes one of these, never the raw section."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> Self:
        return dataclass_from_section(cls, section, cls.SECTION)


def dataclass_from_section(cls: type[T], section: dict[str, Any], where: str) -> T:
    """Build a config dataclass from its section; unknown keys are an error naming them."""
    unknown = set(section) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    return cls(**section)


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def check_schema(config: dict[str, Any], schema: dict[str, Any], origin: str = "config") -> None:
    """Raise :class:`ConfigError` for the first schema violation, naming its dotted key path, and for a
    key of a kind-keyed section also the kind (``from: local``) and the keys that kind takes."""
    from jsonschema.exceptions import best_match

    _check_finite(config, [], origin)
    errors = list(_validator()(schema).iter_errors(config))
    if not errors:
        return
    # a key is also unevaluated when its kind's clause failed for another reason (a bad kind, a wrong
    # type): report that reason, and the unexpected key only when it is the whole story
    error = best_match([e for e in errors if e.validator != "unevaluatedProperties"] or errors)
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        raise ConfigError(f"{origin}: {error.message} at key '{key}'")
    if error.validator == "unevaluatedProperties":
        kind, allowed = _kind_and_keys(error.schema, error.instance, schema)
        unexpected = sorted(set(error.instance) - allowed)
        verb = "does" if len(unexpected) == 1 else "do"
        raise ConfigError(f"{origin}: key '{key}': {', '.join(map(repr, unexpected))} {verb} not apply to {kind} "
                          f"(its keys: {', '.join(sorted(allowed))})")
    path = list(error.schema_path)
    if error.validator == "required" and path[-2:-1] == ["then"]:  # [..., object, "allOf", i, "then", "required"]
        kind, _ = _kind_and_keys(_schema_at(schema, path[:-4]), error.instance, schema)
        raise ConfigError(f"{origin}: key '{key}': {error.message} ({kind})")
    raise ConfigError(f"{origin}: key '{key}': {error.message}")


def _validator() -> Any:
    """Draft 2020-12, where an integer is an int: JSON Schema counts 8.0 as one, but a count or a width
    written 8.0 in YAML is a float the code would carry on with."""
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return validators.extend(Draft202012Validator, type_checker=checker)


def _check_finite(value: Any, path: list[Any], origin: str) -> None:
    """YAML spells NaN and infinities (``.nan``, ``.inf``) and JSON has neither, so the schema's bounds let
    them through: no setting takes one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{origin}: key '{'.'.join(map(str, path))}': {value} is not a finite number")
    if isinstance(value, Mapping):
        for key, child in value.items():
            _check_finite(child, [*path, key], origin)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _check_finite(child, [*path, index], origin)


def _schema_at(schema: dict[str, Any], path: list[Any]) -> Any:
    """The subschema at a jsonschema ``schema_path`` (which leaves out the ``$ref`` steps it took)."""
    node: Any = schema
    for part in path:
        while isinstance(node, Mapping) and part not in node and "$ref" in node:
            node = _resolve(node, schema)
        node = node[part]
    return node


def _resolve(node: Mapping[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its local ``$ref`` followed; ``properties`` beside the ``$ref`` add to the target's."""
    while "$ref" in node:
        target: Any = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **siblings,
                "properties": {**target.get("properties", {}), **siblings.get("properties", {})}}
    return dict(node)


def _condition(clause: Mapping[str, Any]) -> tuple[str, list[Any]] | None:
    """``(key, values)`` of an ``if`` clause that tests one key's value (``const`` or ``enum``)."""
    tests = [(key, [test["const"]] if "const" in test else list(test["enum"]))
             for key, test in clause.get("properties", {}).items()
             if isinstance(test, Mapping) and ("const" in test or "enum" in test)]
    return tests[0] if len(tests) == 1 else None


def _kind_and_keys(node: Mapping[str, Any], instance: Any, schema: dict[str, Any]) -> tuple[str, set[str]]:
    """For a kind-keyed object schema (the one ``allOf`` of ``if``/``then`` pattern): ``'from: local'``,
    and the keys that kind takes: the object's own properties and those of each ``then`` whose
    condition holds for ``instance``."""
    node = _resolve(node, schema)
    allowed = set(node.get("properties", {}))
    kind = "this section"
    for clause in node.get("allOf", []):
        condition = _condition(clause.get("if", {}))
        if condition is None or not isinstance(instance, Mapping):
            continue
        field, values = condition
        kind = f"{field}: {instance.get(field)}"
        if instance.get(field) in values:
            allowed |= set(_resolve(clause.get("then", {}), schema).get("properties", {}))
    return kind, allowed


def check_references(config: dict[str, Any], origin: str = "config") -> dict[str, str]:
    """Check cross-references between sections; return each used source's table kind."""
    sources = config["sources"]
    kinds: dict[str, str] = {}

    def use(source: str, kind: str, where: str) -> None:
        if source not in sources:
            raise ConfigError(f"{origin}: {where} names unknown source '{source}'; configured: {sorted(sources)}")
        if kinds.setdefault(source, kind) != kind:
            raise ConfigError(f"{origin}: source '{source}' is used both as a frame table and a question table")

    for task, section in config["frame_tasks"].items():
        use(section["source"], "frames", f"frame_tasks.{task}.source")
    for i, (a, b, _) in enumerate(config["mcmc"].get("triples", [])):
        if a == b:
            raise ConfigError(f"{origin}: mcmc.triples[{i}] pairs source '{a}' with itself")
        use(a, "questions", f"mcmc.triples[{i}]")
        use(b, "questions", f"mcmc.triples[{i}]")
    mcmc_ids = {task_id(*t) for t in config["mcmc"].get("triples", [])}
    mcmc_ids |= {task_id(a, b, 1 - i) for a, b, i in config["mcmc"].get("triples", [])}  # the pair's other index
    clash = set(config["frame_tasks"]) & mcmc_ids
    if clash:
        raise ConfigError(f"{origin}: frame task name(s) {sorted(clash)} clash with MCMC task ids")
    survey = config.get("survey", {})
    pairs = {pair_id(a, b) for a, b, _ in config["mcmc"].get("triples", [])}
    for i, pair in enumerate(survey.get("pairs") or []):
        if pair not in pairs:
            raise ConfigError(f"{origin}: survey.pairs[{i}] '{pair}' is not a pair of mcmc.triples (known: {sorted(pairs)})")
    for i, task in enumerate(survey.get("frame_tasks") or []):
        if task not in config["frame_tasks"]:
            raise ConfigError(f"{origin}: survey.frame_tasks[{i}] '{task}' is not a frame task")
    runs = config.get("runs", {})
    for i, task in enumerate(runs.get("tasks", [])):
        if task not in config["frame_tasks"] and task not in mcmc_ids:
            raise ConfigError(
                f"{origin}: runs.tasks[{i}] '{task}' is neither a frame task nor a configured MCMC triple "
                f"(known: {sorted(config['frame_tasks']) + sorted(mcmc_ids)})"
            )
    for i, condition in enumerate(runs.get("conditions", [])):
        method, _, selector = condition.partition("/")
        if condition not in UNHOOKED and selector not in SELECTORS.get(method, ()):
            known = list(UNHOOKED) + [f"{m}/{s}" for m, sel in SELECTORS.items() for s in sel]
            raise ConfigError(f"{origin}: runs.conditions[{i}] '{condition}' is unknown; known: {known}")
    uses_saes = any(c.partition("/")[0] in SAE_METHODS for c in runs.get("conditions", []))
    if uses_saes and not config.get("saes", {}).get("layers"):
        raise ConfigError(f"{origin}: runs.conditions use SAE latents, so saes.layers must list the SAE layers")
    _check_saes(config.get("saes", {}), origin)
    _check_explanations(config, origin)
    return kinds


def _check_explanations(config: dict[str, Any], origin: str) -> None:
    """The auto selector needs explanations of its method, and every explained task needs a query."""
    section = config.get("explanations", {})
    explained = section.get("methods", [])
    conditions = config.get("runs", {}).get("conditions", [])
    for i, condition in enumerate(conditions):
        method, _, selector = condition.partition("/")
        base = interpretation_method(method)
        if selector == "auto" and base not in explained:
            raise ConfigError(f"{origin}: runs.conditions[{i}] '{condition}' needs explanations.methods to include "
                              f"'{base}'")
    if not explained:
        return
    missing = [task for task in config.get("runs", {}).get("tasks", []) if task not in section.get("queries", {})]
    if missing:
        raise ConfigError(f"{origin}: explanations.queries has no query for task(s) {missing}: say what the "
                          "unwanted concept is about, e.g. gender: 'gender, women, men, female pronouns'")


def _check_saes(section: dict[str, Any], origin: str) -> None:
    """The keys each SAE source needs, with the {layer} placeholder that makes them per layer."""
    source = section.get("from", "train")
    needed = {"pretrained": ("release", "sae_id"), "local": ("path",)}.get(source, ())
    for key in needed:
        if not section.get(key):
            raise ConfigError(f"{origin}: saes.from is '{source}', so saes.{key} must be set")
    for key in ("sae_id", "path"):
        if key in needed and "{layer}" not in section[key]:
            raise ConfigError(f"{origin}: saes.{key} '{section[key]}' needs a {{layer}} placeholder")


def check_config(config: dict[str, Any], schema_path: str | Path, origin: str = "config") -> dict[str, str]:
    """Schema and reference checks together; returns the table kind of each used source."""
    check_schema(config, load_schema(schema_path), origin)
    return check_references(config, origin)


def task_id(source_a: str, source_b: str, intended: int) -> str:
    """The id of an MCMC task, as used in result paths: ``{a}_{b}_{intended}``."""
    return f"{source_a}_{source_b}_{intended}"


def pair_id(source_a: str, source_b: str) -> str:
    """The id of the data shared by both intended indices of a pair."""
    return f"{source_a}_{source_b}"
