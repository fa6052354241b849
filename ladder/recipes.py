"""Recipes: named sets of parameter overrides in recipes/<name>.yaml, applied on top of params.yaml.

    python -m ladder.recipes smoke            # writes params.yaml with recipes/smoke.yaml merged in
    python -m ladder.recipes chai wsdm        # chai, then wsdm on top: where both set a key, wsdm's value stays
    ladder recipe chai wsdm                   # the same

A recipe holds only what differs from the default, so it cannot drift from parameters it does not
mention. Merging is by key, recursively; comments and order of params.yaml are kept. In the mappings of named
sources (`fetch.sources`, `fetch.hub_sources`) a source set to null is removed: a recipe that reads a source from
the hub instead of a local file removes it from one and adds it to the other. Several recipes are merged one
after the other into one rewrite of params.yaml: a name that does not exist stops them all before anything is
written.
"""
from __future__ import annotations

from pathlib import Path

import click
from ruamel.yaml import YAML

from ladder.errors import InputError
from ladder.stage import StageCommand


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


def recipe_file(recipe: str | Path) -> Path:
    """The file of a recipe given by path or by name (recipes/<name>.yaml); an InputError naming the known recipes
    when there is neither."""
    given = Path(recipe)
    if given.is_file():
        return given
    named = Path("recipes") / f"{recipe}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in Path("recipes").glob("*.yaml"))) or "none in ./recipes"
    raise InputError(f"no recipe {recipe!r} (neither a file nor recipes/{recipe}.yaml); known: {known}")


def compose(recipes: list[str | Path], params: str | Path = "params.yaml") -> None:
    """Merge `recipes` into `params` in order, each on the result of the ones before it (so the later one wins
    where two set the same key), in one rewrite. Every recipe is read first: an unknown one leaves params as it was."""
    from ladder.params import read_yaml  # one line for a recipe that is not YAML or not a mapping

    overrides = [read_yaml(recipe_file(r)) for r in recipes]

    def merge_all(data: dict) -> None:
        for override in overrides:
            merge(data, override)

    edit(params, merge_all)


def apply(recipe: str | Path, params: str | Path = "params.yaml") -> None:
    """Merge one recipe into `params` (compose with a single recipe)."""
    compose([recipe], params)


def edit(params: str | Path, change) -> None:
    """Rewrite params.yaml with `change(data)` applied, keeping its comments and key order."""
    yaml = YAML()  # round-trip
    yaml.width = 4096
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = yaml.load(Path(params).read_text(encoding="utf-8"))
    change(data)
    with open(params, "w", encoding="utf-8") as out:
        yaml.dump(data, out)


@click.command("recipe", cls=StageCommand, help=__doc__, short_help="Merge recipes into params.yaml, in order.")
@click.argument("recipes", nargs=-1, required=True, metavar="NAME [NAME ...]")
@click.option("--params", "params_file", default="params.yaml", show_default=True, help="the params file to rewrite")
def main(recipes: tuple[str, ...], params_file: str) -> None:
    try:
        compose(list(recipes), params_file)
    except InputError as error:
        raise click.ClickException(str(error)) from None
    except FileNotFoundError as error:
        raise click.ClickException(f"missing file: {error.filename or error}") from None
    click.echo(f"{params_file}: applied {', '.join(recipes)}")


if __name__ == "__main__":
    main()
