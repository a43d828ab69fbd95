"""Check one config section the way the workflow does: in the default config, by `caft.config.check_config`
(the schema, then the references), so a test of a section's bad values sees the message a user gets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from caft.config import check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))


def check_section(path: str, value: Any) -> None:
    """`check_config` on the default config with the dotted `path` set to `value`."""
    config = copy.deepcopy(DEFAULT)
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    check_config(config, SCHEMA)
