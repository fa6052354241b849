"""Recipes: named sets of parameter overrides in recipes/<name>.yaml, applied on top of params.yaml.

    python -m ladder.recipes smoke            # writes params.yaml with recipes/smoke.yaml merged in

A recipe holds only what differs from the default, so it cannot drift from parameters it does not
mention. Merging is by key, recursively; comments and order of params.yaml are kept. In the mappings of named
sources (`fetch.sources`, `fetch.hub_sources`) a source set to null is removed: a recipe that reads a source from
the hub instead of a local file removes it from one and adds it to the other.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ruamel.yaml import YAML


SOURCE_MAPPINGS = (("fetch", "sources"), ("fetch", "hub_sources"))  # where null removes an entry


def merge(base: dict, overrides: dict, _at: tuple = ()) -> dict:
    """`overrides` written into `base` (in place), key by key; a mapping merges, anything else replaces, and null
    removes a source from a SOURCE_MAPPINGS mapping (elsewhere null is a value: `lora: null`)."""
    for key, value in overrides.items():
        if value is None and _at in SOURCE_MAPPINGS:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, (*_at, key))
        else:
            base[key] = value
    return base


def assign(data: dict, setting: str) -> dict:
    """`section.key[.key...]=value` (the value read as YAML, as `dvc exp run -S` takes it) written into `data`."""
    key, _, raw = setting.partition("=")
    *path, last = key.split(".")
    node = data
    for part in path:
        if not isinstance(node.get(part), dict):
            raise KeyError(f"{key}: params have no section {part!r}")
        node = node[part]
    node[last] = YAML(typ="safe", pure=True).load(raw)
    return data


def apply(recipe: str | Path, params: str | Path = "params.yaml") -> None:
    recipe = Path(recipe)
    if not recipe.is_file():
        recipe = Path("recipes") / f"{recipe}.yaml"
    if not recipe.is_file():
        raise FileNotFoundError(f"no recipe {recipe}")
    overrides = YAML(typ="safe", pure=True).load(recipe.read_text(encoding="utf-8")) or {}
    edit(params, lambda data: merge(data, overrides))


def edit(params: str | Path, change) -> None:
    """Rewrite params.yaml with `change(data)` applied, keeping its comments and key order."""
    yaml = YAML()  # round-trip
    yaml.width = 4096
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = yaml.load(Path(params).read_text(encoding="utf-8"))
    change(data)
    with open(params, "w", encoding="utf-8") as out:
        yaml.dump(data, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ladder.recipes <name or path>")
    apply(sys.argv[1])
