"""Selected-direction lists: which PCA components or SAE latents a selector ablates, per layer.

A *selection* is ``{layer: [ids]}`` — PCA component indices within the layer (0 = largest variance),
or SAE latent ids — plus who chose them and why. Selectors: `load_manual_selection` (a person's
choice after auditing the dashboards, kept as YAML under ``config/selections/``: either the ids, or the
person's rule over the dashboard's windows, applied by `rule_selection` so that the choice carries over
to a machine whose SAEs and attribution ranks differ), `auto_selection`
(thresholds on the explanations' relevance and simulation score), and the baselines `top_selection`
(best-ranked k per layer), `random_selection` (same count per layer, seeded: the layer-matched random)
and `random_pool_selection` (the same total count drawn from the pooled candidates of every layer, seeded:
the paper's random baseline).
`projection_spec` turns a selection into the orthonormal bases that fine-tuning ablates.

The artifact is JSON (layer keys as strings, ids ascending)::

    {"method": "pca", "selector": "manual", "task": "gender", "seed": null,
     "layers": {"3": [0, 2], "7": [1]}, "provenance": {...}}
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import yaml
from yaml.constructor import ConstructorError

from caft.artifacts import write_json
from caft.config import SectionConfig
from caft.errors import ConfigError, DataError
from caft.interpret.explanations import candidate_windows, peak_token, token_summary

if TYPE_CHECKING:  # torch only where a spec is built: the workflow reads manual selections while it is parsed
    import torch

    from caft.ablation.specs import InterventionSpec

METHODS: tuple[str, ...] = ("pca", "sae")
MANUAL_SECTION_KEYS: tuple[str, ...] = ("layers", "rule", "notes")
RULE_KEYS: tuple[str, ...] = ("peak_tokens", "min_windows", "of_top", "ends")
ENDS: tuple[str, ...] = ("positive", "negative")
JSON_KEYS: tuple[str, ...] = ("method", "selector", "task", "seed", "layers", "provenance")


@dataclass(frozen=True)
class SelectorConfig(SectionConfig):
    """What one selector variant reads: `top_k` for ``top``; for the random baselines, explicit `counts`
    per layer (``random``) or a total `count` (``random-pool``) where no manual selection exists to match
    (the EM chain without a selection file), else nothing: they match the manual selection's artifact."""

    SECTION: ClassVar[str] = "selection"

    top_k: int | None = None
    counts: dict[int, int] | None = None
    count: int | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> SelectorConfig:
        cfg = super().from_config(section)
        counts = None if cfg.counts is None else {int(layer): int(n) for layer, n in cfg.counts.items()}
        return cls(top_k=cfg.top_k, counts=counts, count=cfg.count)

    def random_counts(self, manual_selection_path: Path | None, variant: str) -> dict[int, int]:
        """Per-layer counts of the layer-matched random baseline."""
        if self.counts is not None:
            return self.counts
        return matched_selection(manual_selection_path, variant).layer_counts()

    def random_count(self, manual_selection_path: Path | None, variant: str) -> int:
        """Total count of the pool-wide random baseline."""
        if self.count is not None:
            return self.count
        return matched_selection(manual_selection_path, variant).count()


@dataclass(frozen=True)
class AutoSelectConfig(SectionConfig):
    """The `selection.auto` thresholds on the explanations."""

    SECTION: ClassVar[str] = "selection.auto"

    min_relevance: float
    min_score: float | None = None
    max_per_layer: int | None = None


def _is_int(value: Any) -> bool:
    """True for Python/numpy integers; bools are rejected (YAML ``yes`` must not become layer 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _index(value: Any, what: str) -> int:
    if not _is_int(value) or value < 0:
        raise DataError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Selection:
    """Directions chosen by one selector for one task (and seed, for seeded selectors).

    Validated and normalised on construction: layers ascending, ids ascending and distinct. A layer
    may list no ids (nothing chosen there); `projection_spec` omits such layers.
    """

    method: str
    selector: str
    task: str
    seed: int | None
    layers: dict[int, list[int]]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"selection method must be one of {list(METHODS)}, got {self.method!r}")
        for name in ("selector", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise DataError(f"selection {name} must be a non-empty string, got {value!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise DataError(f"selection seed must be an integer or null, got {self.seed!r}")
        if not isinstance(self.layers, Mapping):
            raise DataError(f"selection layers must map layer -> ids, got {type(self.layers).__name__}")
        layers: dict[int, list[int]] = {}
        for key, ids in self.layers.items():
            layer = _index(key, "selection layer")
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence | np.ndarray):
                raise DataError(f"selection layer {layer}: ids must be a list, got {ids!r}")
            clean = [_index(i, f"selection layer {layer}: id") for i in ids]
            duplicates = sorted({i for i in clean if clean.count(i) > 1})
            if duplicates:
                raise DataError(f"selection layer {layer}: duplicate ids {duplicates}")
            layers[layer] = sorted(clean)
        try:
            json.dumps(self.provenance)
        except (TypeError, ValueError) as err:
            raise DataError(f"selection provenance must be JSON-serialisable: {err}") from err
        object.__setattr__(self, "layers", dict(sorted(layers.items())))
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))

    def count(self) -> int:
        """Total number of selected directions over all layers."""
        return sum(len(ids) for ids in self.layers.values())

    def layer_counts(self) -> dict[int, int]:
        """Ids per layer (layers with none omitted): the counts a random baseline must match."""
        return {layer: len(ids) for layer, ids in self.layers.items() if ids}

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "selector": self.selector,
            "task": self.task,
            "seed": self.seed,
            "layers": {str(layer): list(ids) for layer, ids in self.layers.items()},
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, obj: Any, origin: str = "selection") -> Selection:
        """Parse `to_json` output; `origin` (usually the file) prefixes every error."""
        try:
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}")
            missing = [key for key in JSON_KEYS if key not in obj]
            unknown = sorted(set(obj) - set(JSON_KEYS))
            if missing or unknown:
                raise DataError(
                    f"missing keys {missing}, unknown keys {unknown} (expected {list(JSON_KEYS)})"
                )
            if not isinstance(obj["layers"], dict):
                raise DataError(f"'layers' must be an object of layer -> ids, got {obj['layers']!r}")
            layers: dict[int, list[int]] = {}
            for key, ids in obj["layers"].items():
                if not (isinstance(key, str) and key.isdecimal()):
                    raise DataError(f"layer key {key!r} is not a non-negative integer")
                layers[int(key)] = ids
            if not isinstance(obj["provenance"], dict):
                raise DataError(f"'provenance' must be an object, got {obj['provenance']!r}")
            return cls(
                method=obj["method"],
                selector=obj["selector"],
                task=obj["task"],
                seed=obj["seed"],
                layers=layers,
                provenance=obj["provenance"],
            )
        except DataError as err:
            raise DataError(f"{origin}: {err}") from err

    def save(self, path: str | Path) -> None:
        write_json(self.to_json(), path)

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read selection: {err}") from err
        return cls.from_json(obj, origin=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one, so a layer
    listed twice would lose ids without a word)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: construct_mapping reports it below
            continue
        if duplicate:
            raise ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


@dataclass(frozen=True)
class PeakTokenRule:
    """A person's selection rule, written after reading the dashboards: a direction is chosen when at least
    `min_windows` of the `of_top` strongest corpus windows of one of its `ends` peak on one of
    `peak_tokens` (the peak token's text with spaces stripped, compared exactly: list "He" beside "he").

    Kept as a rule rather than as ids because ids do not travel: SAEs trained on another CPU, or a pretune
    in bfloat16 instead of float32, rank other latents at the top, so ids read off one machine's dashboard
    name latents that another machine's rule would never have looked at.
    """

    peak_tokens: tuple[str, ...]
    min_windows: int
    of_top: int
    ends: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Any, where: str) -> PeakTokenRule:
        """Validated from the YAML's ``rule:`` mapping; every error names `where` (file: method)."""
        example = "{peak_tokens: [is, are], min_windows: 5, of_top: 8, ends: [positive]}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: 'rule' must be a mapping like {example}, got {raw!r}")
        unknown = sorted(str(key) for key in raw if key not in RULE_KEYS)
        missing = [key for key in RULE_KEYS if key not in raw]
        if unknown or missing:
            raise ConfigError(f"{where}: rule: unknown key(s) {unknown}, missing key(s) {missing}; "
                              f"expected {list(RULE_KEYS)}, e.g. {example}")
        tokens = raw["peak_tokens"]
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
            raise ConfigError(f"{where}: rule: 'peak_tokens' must be a non-empty list of token texts, got {tokens!r}")
        ends = raw["ends"]
        if not isinstance(ends, list) or not ends or not set(ends) <= set(ENDS) or len(set(ends)) != len(ends):
            raise ConfigError(f"{where}: rule: 'ends' must list distinct ends out of {list(ENDS)}, got {ends!r}")
        of_top, min_windows = raw["of_top"], raw["min_windows"]
        if not _is_int(of_top) or of_top < 1:
            raise ConfigError(f"{where}: rule: 'of_top' must be a positive integer, got {of_top!r}")
        if not _is_int(min_windows) or not 1 <= min_windows <= of_top:
            raise ConfigError(f"{where}: rule: 'min_windows' must be an integer in 1..of_top ({of_top}), "
                              f"got {min_windows!r}")
        return cls(tuple(t.strip() for t in tokens), int(min_windows), int(of_top), tuple(ends))

    def to_json(self) -> dict[str, Any]:
        return {"peak_tokens": list(self.peak_tokens), "min_windows": self.min_windows, "of_top": self.of_top,
                "ends": list(self.ends)}


def rule_selection(windows: pd.DataFrame, rule: PeakTokenRule, *, id_column: str, method: str, task: str,
                   origin: str, provenance: Mapping[str, Any] | None = None) -> Selection:
    """The directions of a windows table (``windows.parquet``: the dashboard's candidates) that `rule`
    chooses. The provenance lists every chosen end with its peak-token counts, so the artifact shows why.
    `origin` (the selection file) names the rule in the error when it chooses nothing."""
    deepest = int(windows.loc[windows["sign"].isin(rule.ends), "rank"].max()) + 1 if len(windows) else 0
    if deepest < rule.of_top:
        raise DataError(
            f"{origin}: {method}: the rule reads the {rule.of_top} strongest windows of each end, but the windows "
            f"table keeps at most {deepest} (windows.per_component): raise it, or the rule would not be the one "
            "that was fixed"
        )
    wanted = set(rule.peak_tokens)
    layers: dict[int, set[int]] = {}
    matches: dict[str, str] = {}
    for (layer, ident, sign), top, _ in candidate_windows(windows, id_column):
        if sign not in rule.ends:
            continue
        shown = top[: rule.of_top]
        hits = sum(peak_token(window) in wanted for window in shown)
        if hits >= rule.min_windows:
            layers.setdefault(layer, set()).add(ident)
            matches[f"L{layer} #{ident} {sign}"] = token_summary(shown)
    if not layers:
        raise DataError(
            f"{origin}: {method}: the rule {rule.to_json()} chooses none of the "
            f"{windows.groupby(['layer', id_column]).ngroups} directions of the windows table; a selection must "
            "ablate something (read the dashboard again and write a rule, or ids, that it supports; the dashboard "
            f"builds without it once runs.conditions leaves out the {method} conditions that read it: manual and "
            "the random baselines, which copy its counts)"
        )
    record = {"rule": rule.to_json(), "matches": matches, **(provenance or {})}
    return Selection(method=method, selector="manual", task=task, seed=None,
                     layers={layer: sorted(ids) for layer, ids in layers.items()}, provenance=record)


def _manual_section(path: Path, method: str) -> dict[str, Any]:
    """The file's section for `method`, checked for its keys (ids or a rule, and notes)."""
    task = path.stem
    if method not in METHODS:
        raise ConfigError(f"{path}: unknown selection method {method!r}; expected one of {list(METHODS)}")
    if not path.is_file():
        raise ConfigError(f"no manual selection for task {task}: create {path}")
    raw = path.read_bytes()
    try:
        stream = io.StringIO(raw.decode("utf-8"))
        stream.name = str(path)  # PyYAML's error marks name the stream
        document = yaml.load(stream, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: expected a mapping of method -> section ({', '.join(m + ':' for m in METHODS)}), "
            f"got {type(document).__name__}"
        )
    unknown = sorted(str(key) for key in document if key not in METHODS)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; allowed: {list(METHODS)}")
    if method not in document:
        raise ConfigError(
            f"{path}: no '{method}:' section; add one, e.g. \"{method}: {{layers: {{3: [0, 2]}}}}\""
        )
    where = f"{path}: {method}"
    section = document[method]
    if not isinstance(section, dict):
        raise ConfigError(
            f"{where}: expected a mapping with 'layers' or 'rule' (and optional 'notes'), got {section!r}"
        )
    unknown = sorted(str(key) for key in section if key not in MANUAL_SECTION_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(MANUAL_SECTION_KEYS)}")
    if ("layers" in section) == ("rule" in section):
        raise ConfigError(f"{where}: give either 'layers' (layer index -> list of ids) or 'rule' (peak tokens "
                          "of the dashboard's windows), exactly one")
    notes = section.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise ConfigError(f"{where}: 'notes' must be text, got {notes!r}")
    return section


def _keys_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _keys_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_keys_as_text(item) for item in value]
    return value


def section_digest(section: Mapping[str, Any]) -> str:
    """sha256 of one method's section (canonical JSON): what a selection made from it depends on."""
    return hashlib.sha256(json.dumps(_keys_as_text(dict(section)), sort_keys=True).encode()).hexdigest()


def manual_section_digest(path: str | Path, method: str) -> str:
    """The digest of `method`'s section of a selection file, checked: the workflow passes it to the
    selector as a parameter instead of the file as an input, so editing the other method's section of
    the same file reruns nothing made from this one."""
    section = _manual_section(Path(path), method)
    return section_digest(section)


def manual_file(param: Mapping[str, str] | None) -> Path | None:
    """The selection file of a manual selector's parameter (``{file, sha256}``; None for other selectors)."""
    return Path(param["file"]) if param else None


def manual_rule(path: str | Path, method: str) -> PeakTokenRule | None:
    """The section's rule, or None when it lists ids: a rule needs the windows table as an input."""
    path = Path(path)
    section = _manual_section(path, method)
    return PeakTokenRule.parse(section["rule"], f"{path}: {method}") if "rule" in section else None


def load_manual_selection(
    path: str | Path, method: str, n_layers: int, n_ids: int | Mapping[int, int], *,
    windows_path: Path | None = None, id_column: str = "component",
) -> Selection:
    """A person's selection for one task, from ``config/selections/<task>.yaml``.

    The task is the file's stem. Format (one section per method; either may be absent as long as the
    requested one is present)::

        # config/selections/gender.yaml
        pca:                      # method
          layers:                 # layer index -> ids (PCA component index 0..k-1, or SAE latent id)
            3: [0, 2]
            7: [1]
          notes: "why these were chosen (free text)"   # optional, kept in provenance
        sae:                      # or the person's rule over the dashboard's windows (`PeakTokenRule`)
          rule: {peak_tokens: [he, she], min_windows: 5, of_top: 8, ends: [positive]}

    A rule is applied to the windows table at `windows_path` (the method's ``windows.parquet``, ids in
    `id_column`; its path and sha256 go into the provenance). Validated
    strictly, because a typo here silently changes what is ablated: every error is a `ConfigError` naming
    the file, the method, the layer and the id. Layers must lie in ``0..n_layers-1``; ids in ``0..n-1``
    where n is `n_ids` (an int for every layer, or a per-layer mapping — a layer missing from it has no
    candidates, e.g. no SAE). Ids must be distinct integers, each listed layer needs at least one id, and
    duplicate YAML keys are rejected.
    """
    path = Path(path)
    section = _manual_section(path, method)
    where = f"{path}: {method}"
    provenance = {
        "file": str(path),
        "section_sha256": section_digest(section),
        "notes": section.get("notes"),
        "n_layers": n_layers,
    }
    if "rule" in section:
        rule = PeakTokenRule.parse(section["rule"], where)
        if windows_path is None:
            raise DataError(f"{where}: the selection is a rule, which needs the method's windows table")
        provenance["windows"] = {"file": str(windows_path),
                                 "sha256": hashlib.sha256(Path(windows_path).read_bytes()).hexdigest()}
        return rule_selection(pd.read_parquet(windows_path), rule, id_column=id_column, method=method,
                              task=path.stem, origin=str(path), provenance=provenance)
    raw_layers = section["layers"]
    if raw_layers is None or raw_layers == {}:
        raise ConfigError(f"{where}: empty selection: 'layers' lists no layer")
    if not isinstance(raw_layers, dict):
        raise ConfigError(f"{where}: 'layers' must map layer index -> list of ids, got {raw_layers!r}")
    layers: dict[int, list[int]] = {}
    for key, ids in raw_layers.items():
        layer = _manual_layer(key, where, n_layers)
        if layer in layers:
            raise ConfigError(f"{where}: layer {layer} is listed twice")
        layers[layer] = _manual_ids(ids, f"{where}: layer {layer}", _id_limit(n_ids, layer, where))
    return Selection(
        method=method, selector="manual", task=path.stem, seed=None, layers=layers, provenance=provenance
    )


def matched_selection(path: Path | None, variant: str) -> Selection:
    """The manual selection whose counts a random baseline (`variant`) matches, from its artifact."""
    if path is None:
        raise ConfigError(f"the {variant} baseline draws as many directions as the manual selection: it needs "
                          "the manual selection's artifact, or explicit counts")
    return Selection.load(path)


def _manual_layer(key: Any, where: str, n_layers: int) -> int:
    """Layer keys may be written 3 or "3" (as in the JSON artifact); nothing else."""
    if isinstance(key, str) and key.isdecimal():
        key = int(key)
    if not _is_int(key):
        raise ConfigError(f"{where}: layer key {key!r} is not an integer layer index")
    if not 0 <= key < n_layers:
        raise ConfigError(
            f"{where}: layer {key} out of range: the model has {n_layers} layers (valid 0..{n_layers - 1})"
        )
    return int(key)


def _id_limit(n_ids: int | Mapping[int, int], layer: int, where: str) -> int:
    if not isinstance(n_ids, Mapping):
        return int(n_ids)
    if layer not in n_ids:
        raise ConfigError(
            f"{where}: layer {layer} has no candidates (candidates exist for layers {sorted(n_ids)})"
        )
    return int(n_ids[layer])


def _manual_ids(ids: Any, where: str, limit: int) -> list[int]:
    if not isinstance(ids, list):
        raise ConfigError(f"{where}: ids must be a list like [0, 2], got {ids!r}")
    if not ids:
        raise ConfigError(f"{where}: empty id list; remove the layer or list ids")
    for value in ids:
        if not _is_int(value):
            raise ConfigError(f"{where}: id {value!r} is not an integer")
        if not 0 <= value < limit:
            raise ConfigError(f"{where}: id {value} out of range (valid ids 0..{limit - 1})")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{where}: duplicate id(s) {duplicates}")
    return [int(i) for i in ids]


def top_selection(
    summary: pd.DataFrame,
    k_per_layer: int | Mapping[int, int],
    *,
    method: str,
    task: str,
    id_column: str = "component",
    rank_column: str = "component",
    provenance: Mapping[str, Any] | None = None,
) -> Selection:
    """The top-k baseline: per layer, the k ids with the smallest `rank_column` (ties: smaller id).

    For PCA the defaults rank by component index (0 = largest variance); for SAE attribution pass
    ``id_column="latent", rank_column="rank"``. `k_per_layer` is one k for every layer of `summary`,
    or per-layer counts (e.g. a manual selection's `layer_counts()`), so the baseline matches them.
    """
    missing = [c for c in ("layer", id_column, rank_column) if c not in summary.columns]
    if missing:
        raise DataError(f"top_selection: summary lacks column(s) {missing} (has {list(summary.columns)})")
    duplicated = summary.duplicated(["layer", id_column])
    if duplicated.any():
        row = summary[duplicated].iloc[0]
        raise DataError(
            f"top_selection: summary lists layer {row['layer']} {id_column} {row[id_column]} twice"
        )
    if isinstance(k_per_layer, Mapping):
        counts = {int(layer): int(k) for layer, k in k_per_layer.items()}
    else:
        counts = {int(layer): int(k_per_layer) for layer in summary["layer"].unique()}
    layers: dict[int, list[int]] = {}
    for layer, k in sorted(counts.items()):
        rows = summary[summary["layer"] == layer].sort_values([rank_column, id_column], kind="stable")
        if not 0 <= k <= len(rows):
            raise ConfigError(
                f"top_selection: layer {layer}: cannot take {k} {id_column}s, the summary has {len(rows)}"
            )
        if k:
            layers[layer] = [int(i) for i in rows[id_column].head(k)]
    record = {
        "k_per_layer": {str(layer): k for layer, k in sorted(counts.items())},
        "id_column": id_column,
        "rank_column": rank_column,
        **(provenance or {}),
    }
    return Selection(method=method, selector="top", task=task, seed=None, layers=layers, provenance=record)


def random_selection(
    candidates: Mapping[int, Sequence[int]],
    counts: Mapping[int, int],
    seed: int,
    *,
    method: str,
    task: str,
    provenance: Mapping[str, Any] | None = None,
) -> Selection:
    """The random baseline: per layer, `counts[layer]` ids drawn without replacement from that layer's
    candidates.

    One ``numpy.random.default_rng([seed, layer])`` per layer, over the sorted distinct candidates:
    the draw depends only on (seed, layer, candidate set), not on input order or other layers, and
    no global RNG is touched.
    """
    layers: dict[int, list[int]] = {}
    pool_sizes: dict[str, int] = {}
    for layer, count in sorted(counts.items()):
        if not _is_int(count) or count < 0:
            raise ConfigError(
                f"random_selection: layer {layer}: count must be a non-negative integer, got {count!r}"
            )
        if count == 0:
            continue
        pool = np.array(sorted({int(c) for c in candidates.get(layer, [])}), dtype=np.int64)
        if len(pool) < count:
            raise ConfigError(
                f"random_selection: layer {layer}: {count} ids requested but only {len(pool)} candidates"
            )
        rng = np.random.default_rng([int(seed), int(layer)])
        layers[int(layer)] = [int(i) for i in rng.choice(pool, size=int(count), replace=False)]
        pool_sizes[str(layer)] = len(pool)
    record = {
        "counts": {str(layer): int(n) for layer, n in sorted(counts.items())},
        "candidates": pool_sizes,
        "rng": "numpy.random.default_rng([seed, layer]).choice(sorted candidates, replace=False)",
        **(provenance or {}),
    }
    return Selection(
        method=method, selector="random", task=task, seed=int(seed), layers=layers, provenance=record
    )


RANDOM_POOL_TAG = int.from_bytes(b"pool", "big")
"""The second entropy word of `random_pool_selection`'s generator, ``default_rng([seed, RANDOM_POOL_TAG])``:
fixed, and far above any layer index, so the pool draw never shares a stream with a layer's
`random_selection` draw of the same seed."""


def random_pool_selection(
    pool: Mapping[int, Sequence[int]],
    count: int,
    seed: int,
    *,
    method: str,
    task: str,
    pool_name: str,
    provenance: Mapping[str, Any] | None = None,
) -> Selection:
    """The pool-wide random baseline (the paper's): `count` (layer, id) pairs drawn without replacement
    from the candidates of every layer together, so the layers a draw lands in are random too.

    `pool` maps layer -> candidate ids (SAE: the top latents by attribution over all layers, each under
    its layer; PCA: every layer's components). `pool_name` says where the pool comes from (file, key)
    for the error when it holds fewer than `count` pairs and for the provenance. One
    ``numpy.random.default_rng([seed, RANDOM_POOL_TAG])`` draws positions in the pool sorted by
    (layer, id): the draw depends only on (seed, pool), not on input order, and no global RNG is touched.
    """
    if not _is_int(count) or count < 1:
        raise ConfigError(f"random_pool_selection: count must be a positive integer, got {count!r}")
    pairs = sorted({(int(layer), int(i)) for layer, ids in pool.items() for i in ids})
    if len(pairs) < count:
        raise ConfigError(
            f"random_pool_selection: {count} ids requested but the pool holds only {len(pairs)}: {pool_name}"
        )
    rng = np.random.default_rng([int(seed), RANDOM_POOL_TAG])
    layers: dict[int, list[int]] = {}
    for position in rng.choice(len(pairs), size=int(count), replace=False):
        layer, ident = pairs[int(position)]
        layers.setdefault(layer, []).append(ident)
    sizes = Counter(layer for layer, _ in pairs)
    record = {
        "count": int(count),
        "pool": pool_name,
        "pool_size": len(pairs),
        "pool_per_layer": {str(layer): n for layer, n in sorted(sizes.items())},
        "rng": f"numpy.random.default_rng([seed, {RANDOM_POOL_TAG}]).choice(len(pool), count, replace=False) "
               "over the pool sorted by (layer, id)",
        **(provenance or {}),
    }
    return Selection(
        method=method, selector="random-pool", task=task, seed=int(seed), layers=layers, provenance=record
    )


def auto_selection(
    explained: pd.DataFrame,
    *,
    id_column: str,
    method: str,
    task: str,
    min_relevance: float,
    min_score: float | None,
    max_per_layer: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[Selection, dict[str, int]]:
    """The automatic selector: ids whose explanation is relevant to the task and, unless `min_score` is
    None, good enough to trust (simulation score).

    `explained` is `caft.interpret.explanations.explain_candidates` output: a row per (layer, `id_column`[, sign])
    with `relevance_explanation` and `simulation_score`. A row passes when relevance ≥ `min_relevance`
    and score ≥ `min_score` (NaN — no explanation, or an undefined score — fails); an id is selected when
    any of its rows (either end of a PC) passes both. `max_per_layer` keeps the most relevant passing ids
    of each layer (ties: smaller id). Also returns how many ids each filter keeps, to tune thresholds:
    ``candidates``, ``relevance``, ``score`` (all candidates without `min_score`), ``both``, and
    ``selected`` (after the cap).
    """
    _check_explained(explained, id_column, min_score is not None)
    relevant = explained["relevance_explanation"] >= min_relevance
    everything = pd.Series(True, index=explained.index)
    scored = explained["simulation_score"] >= min_score if min_score is not None else everything
    keys = [explained["layer"], explained[id_column]]
    passes = pd.DataFrame({"relevance": relevant, "score": scored, "both": relevant & scored}).groupby(keys).any()
    best = explained[relevant & scored].groupby(["layer", id_column])["relevance_explanation"].max().reset_index()
    best = best.sort_values(["layer", "relevance_explanation", id_column], ascending=[True, False, True])
    if max_per_layer is not None:
        best = best.groupby("layer").head(max_per_layer)
    layers = {int(layer): [int(i) for i in group[id_column]] for layer, group in best.groupby("layer")}
    counts = {"candidates": len(passes), **{name: int(passes[name].sum()) for name in passes.columns},
              "selected": len(best)}
    record = {
        "id_column": id_column,
        "min_relevance": float(min_relevance),
        "min_score": None if min_score is None else float(min_score),
        "max_per_layer": max_per_layer,
        "counts": counts,
        **(provenance or {}),
    }
    selection = Selection(method=method, selector="auto", task=task, seed=None, layers=layers, provenance=record)
    return selection, counts


def _check_explained(explained: pd.DataFrame, id_column: str, needs_score: bool) -> None:
    needed = ["layer", id_column, "relevance_explanation", *(["simulation_score"] if needs_score else [])]
    missing = [c for c in needed if c not in explained.columns]
    if missing:
        raise DataError(f"auto_selection: explanations lack column(s) {missing} (has {list(explained.columns)})")
    for column in needed[2:]:
        if not pd.api.types.is_numeric_dtype(explained[column]):
            raise DataError(f"auto_selection: column {column!r} must be numeric, got {explained[column].dtype}")
    keys = ["layer", id_column, *(["sign"] if "sign" in explained.columns else [])]
    duplicated = explained.duplicated(keys)
    if duplicated.any():
        row = explained[duplicated].iloc[0]
        where = ", ".join(f"{key} {row[key]}" for key in keys)
        raise DataError(f"auto_selection: explanations list {where} twice")


def projection_spec(selection: Selection, components: Mapping[int, torch.Tensor]) -> InterventionSpec:
    """Projection bases for `selection`: per layer, the orthonormalised selected columns of
    ``components[layer]`` [d_model, k].

    For PCA pass the per-layer components as columns (already orthonormal; `orthonormal_basis` makes
    the float32 result exactly so); for SAEs pass ``W_dec.T`` [d_model, d_sae], which gives the QR of
    the selected decoder rows. Layers with no ids are omitted.
    """
    from caft.ablation.specs import InterventionSpec, orthonormal_basis

    bases: dict[int, torch.Tensor] = {}
    for layer, ids in selection.layers.items():
        if not ids:
            continue
        where = f"projection_spec ({selection.selector} selection, task {selection.task}): layer {layer}"
        if layer not in components:
            raise DataError(f"{where}: no components for this layer (have layers {sorted(components)})")
        matrix = components[layer]
        if matrix.ndim != 2:
            raise DataError(f"{where}: components must be 2-D [d_model, k], got shape {tuple(matrix.shape)}")
        bad = [i for i in ids if i >= matrix.shape[1]]
        if bad:
            raise DataError(f"{where}: ids {bad} out of range: the components have {matrix.shape[1]} columns")
        bases[layer] = orthonormal_basis(matrix[:, ids].T)
    return InterventionSpec(kind="projection", bases=bases, provenance={"selection": selection.to_json()})
