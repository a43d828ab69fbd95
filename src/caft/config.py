"""Config checks with messages that name the offending key, before Snakemake's own ``validate()``.

The JSON schema (``config/schema.yaml``) covers types and unknown keys; :func:`check_references`
covers what a schema cannot: names that must refer to configured sources, one table kind per source.
"""

from __future__ import annotations

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
}
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

T = TypeVar("T")

SOURCE_KEYS = {
    "builtin": {"from", "generator", "rows", "seed"},
    "local": {"from", "path", "file"},
    "huggingface": {"from", "dataset", "config_name", "split", "revision"},
}


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


def keyed_section(section: Any, kind_key: str, allowed: dict[str, tuple[frozenset[str], frozenset[str]]],
                  where: str) -> str:
    """The kind of a section that picks its keys by one of them (``client:``, ``kind:``): checks the kind,
    unknown and missing keys against ``allowed[kind] = (required, optional)``; returns the kind."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}")
    kind = section.get(kind_key)
    if kind not in allowed:
        raise ConfigError(f"{where}: '{kind_key}' must be one of {sorted(allowed)}, got {kind!r}")
    required, optional = allowed[kind]
    unknown = sorted(set(section) - required - optional)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where} ({kind}): {unknown}; allowed: {sorted(required | optional)}")
    missing = sorted(required - set(section))
    if missing:
        raise ConfigError(f"{where} ({kind}) lacks required key(s): {missing}")
    return kind


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def check_schema(config: dict[str, Any], schema: dict[str, Any], origin: str = "config") -> None:
    """Raise :class:`ConfigError` for the first schema violation, naming its dotted key path."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        raise ConfigError(f"{origin}: {error.message} at key '{key}'")
    raise ConfigError(f"{origin}: key '{key}': {error.message}")


def check_references(config: dict[str, Any], origin: str = "config") -> dict[str, str]:
    """Check cross-references between sections; return each used source's table kind."""
    sources = config["sources"]
    for name, spec in sources.items():
        extra = set(spec) - SOURCE_KEYS[spec["from"]]
        if extra:
            raise ConfigError(f"{origin}: key(s) {sorted(extra)} of sources.{name} do not apply to from: {spec['from']}")
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
        base = "sae" if method in SAE_METHODS else method
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
