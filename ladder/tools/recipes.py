"""Recipes: named sets of parameter overrides in recipes/<name>.yaml, applied on top of params.yaml.

    python -m ladder.tools.recipes smoke            # writes params.yaml with recipes/smoke.yaml merged in
    python -m ladder.tools.recipes chai wsdm        # chai, then wsdm on top: where both set a key, wsdm's value stays
    ladder recipe chai wsdm                   # the same

A recipe holds only what differs from the default, so it cannot drift from parameters it does not
mention. Merging is by key, recursively; comments and order of params.yaml are kept. In the mappings of named
sources (`fetch.sources`, `fetch.hub_sources`) a source set to null is removed: a recipe that reads a source from
the hub instead of a local file removes it from one and adds it to the other. Several recipes are merged one
after the other into one rewrite of params.yaml: a name that does not exist stops them all before anything is
written.

A key whose value a recipe changes (or adds) loses the comment params.yaml had for it, which described the
default's value: its end-of-line comment and the comment lines directly above it. The recipe's own comment for
that key takes its place where the recipe has one. Keys the recipe leaves as they were keep their comments.
"""
from __future__ import annotations

import copy
from pathlib import Path

import click
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedBase, CommentedMap
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from ladder.errors import InputError
from ladder.stage import StageCommand


SOURCE_MAPPINGS = (("fetch", "sources"), ("fetch", "hub_sources"))  # where null removes an entry


def merge(base: dict, overrides: dict, _at: tuple = ()) -> dict:
    """`overrides` written into `base` (in place), key by key; a mapping merges, anything else replaces, and null
    removes a source from a SOURCE_MAPPINGS mapping (elsewhere null is a value: `lora: null`).

    With round-trip data on both sides (ruamel CommentedMaps, as `compose` reads them), a key whose value changes
    takes the override's comment for it, or none: params.yaml's comment described the value it had."""
    return _merge(base, overrides, _at, None, None)


def _merge(base: dict, overrides: dict, at: tuple, parent: tuple | None, source_parent: tuple | None) -> dict:
    """merge, knowing the (mapping, key) that holds `base` and the one that holds `overrides` (None at the top):
    the comment lines above a mapping's first key may live on its parent's token."""
    for key, value in overrides.items():
        if value is None and at in SOURCE_MAPPINGS:
            if key in base:
                remove_key(base, key, parent)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, (*at, key), (base, key), (overrides, key))
        elif key not in base or base[key] != value:
            replace(base, key, overrides, parent, source_parent, indent=2 * len(at))
    return base


def replace(base: dict, key, overrides: dict, parent: tuple | None, source_parent: tuple | None,
            indent: int) -> None:
    """base[key] = overrides[key], and, in round-trip data, the override's comment for the key in place of the
    one base had (none if the override has none)."""
    value = overrides[key]
    if isinstance(value, CommentedBase):
        value = copy.deepcopy(value)  # the override's own tokens stay whole for the keys read after this one
        clear_tail(*holder(value, None))  # lines above the override's next key, not part of this value
    if not isinstance(base, CommentedMap):
        base[key] = value
        return
    # the lines that follow this key's value (or, for a new key, the last key's) in the file belong to what comes
    # next: they move with the end of the value, wherever the new value ends
    new = key not in base
    last = key if not new else (list(base)[-1] if base else None)
    following = clear_tail(*holder(base, last)) if last is not None else []
    base[key] = value
    above, eol, column = own_comment(overrides, key, source_parent)
    set_comment(base, key, parent, above, eol, indent, column, new=new)
    add_tail(*holder(base, key), following)

# Comments. ruamel keeps a comment on the token emitted before the text it precedes, so "the comment of a key" is
# spread over three places (checked on params.yaml with ruamel.yaml 0.19):
#   - its end-of-line comment: mapping.ca.items[key][2], whose text goes on with the end-of-line comment's
#     continuation lines (indented past the key) and then with the lines above the NEXT key in the document,
#     which may belong to a parent mapping (reward.trainer's last key holds the lines above reward.filter);
#   - the lines above it: the tail of that token of the key before it (of its last leaf, if that is a block
#     mapping); for a first key, the tail of its parent key's end-of-line comment and the list
#     mapping.ca.comment[1] (the same list object as parent.ca.items[parent_key][3]); after a flow value,
#     mapping.ca.items[key][1];
#   - new lines above a key are written to mapping.ca.items[key][1], which the emitter writes before the key.


def _lines(text: str) -> list[str]:
    """A comment token's text as lines, without their line breaks ('' for a blank line)."""
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def holder(mapping, key):
    """(mapping, key) whose end-of-line token is written last within `mapping[key]` (the whole `mapping` when key is
    None): the key itself, or the last leaf of the block mapping it holds. Its token's tail is the comment lines
    above whatever the document holds next."""
    while True:
        value = mapping[key] if key is not None else mapping
        if not (isinstance(value, CommentedMap) and value and value.fa.flow_style() is not True):
            return mapping, key
        mapping, key = value, list(value)[-1]


def _eol_token(mapping, key):
    entry = mapping.ca.items.get(key) if isinstance(mapping, CommentedBase) and key is not None else None
    return entry[2] if entry and len(entry) > 2 else None


def split_eol(mapping, key) -> tuple[list[str], list[str]]:
    """(the key's own end-of-line comment lines, the tail: lines above what follows) from its token. Continuation
    lines sit past the key's own indentation; the tail's lines at or before it (a sibling's or a parent's)."""
    token = _eol_token(mapping, key)
    if token is None:
        return [], []
    lines = _lines(token.value)
    if not lines[0]:  # no end-of-line comment: the token only carries the lines after the value
        return [], lines[1:]
    try:
        key_column = mapping.lc.key(key)[1]
    except (KeyError, TypeError, AttributeError):  # added since loading: continuation lines are aligned with it
        key_column = token.column - 1
    own = 1
    while own < len(lines) and _is_comment(lines[own]) and _indent(lines[own]) > key_column:
        own += 1
    return [lines[0].strip()] + [line.strip() for line in lines[1:own]], lines[own:]


def write_eol(mapping, key, eol: list[str], tail: list[str], column: int) -> None:
    """The key's end-of-line token rebuilt from its own comment lines (continuations aligned at `column`) and the
    tail it carries for what follows; none at all when both are empty."""
    entry = mapping.ca.items.setdefault(key, [None, None, None, None])
    if not eol and not tail:
        entry[2] = None
        return
    own = [eol[0]] + [" " * column + line for line in eol[1:]] if eol else [""]
    entry[2] = CommentToken("\n".join(own + tail) + "\n", CommentMark(column))


def clear_tail(mapping, key) -> list[str]:
    """Drop the tail of the key's end-of-line token (the lines above what followed it where it came from); the
    dropped lines are returned."""
    if _eol_token(mapping, key) is None:
        return []
    eol, tail = split_eol(mapping, key)
    write_eol(mapping, key, eol, [], _eol_token(mapping, key).column)
    return tail


def add_tail(mapping, key, tail: list[str]) -> None:
    """Append `tail` (lines above what follows) to the key's end-of-line token."""
    if not tail:
        return
    eol, kept = split_eol(mapping, key)
    token = _eol_token(mapping, key)
    write_eol(mapping, key, eol, kept + tail, token.column if token is not None else 0)


def _split_above(lines: list[str]) -> tuple[list[str], list[str]]:
    """(lines kept, the block of comment lines at the end): the comment directly above a key ends its text."""
    start = len(lines)
    while start and _is_comment(lines[start - 1]):
        start -= 1
    return lines[:start], lines[start:]


def _pre_lines(mapping, key) -> list[str]:
    entry = mapping.ca.items.get(key)
    tokens = entry[1] if entry and len(entry) > 1 and entry[1] else []
    return [line for t in tokens for line in _lines(" " * t.column + t.value)]


def _first_key_lines(mapping) -> list:
    """The list of tokens above a mapping's first key (shared with its parent's entry), or an empty list."""
    comment = mapping.ca.comment
    return comment[1] if comment and len(comment) > 1 and comment[1] else []


def own_comment(mapping, key, parent) -> tuple[list[str], list[str], int | None]:
    """(the comment lines directly above `key` in `mapping`, its end-of-line comment lines, each stripped of
    indentation, and the end-of-line comment's column). `parent` is (mapping, key) holding `mapping`, or None at
    the top level, whose comment above the first key is the file's header, no key's."""
    if not isinstance(mapping, CommentedMap):
        return [], [], None
    keys = list(mapping)
    if keys.index(key) > 0:
        before = split_eol(*holder(mapping, keys[keys.index(key) - 1]))[1]
    elif parent is not None:
        before = split_eol(*parent)[1] + [line for t in _first_key_lines(mapping)
                                          for line in _lines(" " * t.column + t.value)]
    else:
        before = []
    above = _split_above(before + _pre_lines(mapping, key))[1]
    token = _eol_token(mapping, key)
    return [line.strip() for line in above], split_eol(mapping, key)[0], token.column if token else None


def drop_above(mapping, key, parent) -> None:
    """Remove the comment lines directly above `key` wherever ruamel keeps them (see the notes above)."""
    entry = mapping.ca.items.get(key)
    if entry and len(entry) > 1:
        entry[1] = None
    keys = list(mapping)
    if keys.index(key) > 0:
        owner = holder(mapping, keys[keys.index(key) - 1])
        eol, tail = split_eol(*owner)
        if _eol_token(*owner) is not None:
            write_eol(*owner, eol, _split_above(tail)[0], _eol_token(*owner).column)
        return
    if parent is None:  # the top level's first comment is the file's header
        return
    tokens = _first_key_lines(mapping)
    if tokens:
        kept = _split_above([line for t in tokens for line in _lines(" " * t.column + t.value)])[0]
        tokens[:] = [_pre_token(kept)] if kept else []
    eol, tail = split_eol(*parent)
    if _eol_token(*parent) is not None:
        write_eol(*parent, eol, _split_above(tail)[0], _eol_token(*parent).column)


def _pre_token(lines: list[str]) -> CommentToken:
    """Lines above a key as one token: the first line's indentation is the token's column, the rest keep theirs."""
    first = lines[0]
    return CommentToken("\n".join([first.lstrip()] + lines[1:]) + "\n", CommentMark(_indent(first)))


def set_comment(mapping, key, parent, above: list[str], eol: list[str], indent: int,
                column: int | None = None, new: bool = False) -> None:
    """Replace the comment of `key` (lines above, end-of-line) with `above` and `eol`, keeping the tail its token
    carries for what follows. `indent` is the key's column in the written file, `column` the new end-of-line
    comment's where the key had none; a `new` key has no lines above it to drop (what stands above it is the
    end of the mapping, which belongs to the next key in the file)."""
    if not new:
        drop_above(mapping, key, parent)
    old = _eol_token(mapping, key)
    tail = split_eol(mapping, key)[1]
    # params.yaml aligns its end-of-line comments in a column: a replaced one keeps its place
    if old is not None and _lines(old.value)[0]:
        column = old.column
    write_eol(mapping, key, eol, tail, column if column is not None else indent + len(str(key)) + 3)
    if above:
        mapping.ca.items[key][1] = [_pre_token([" " * indent + line for line in above])]
    elif not any(mapping.ca.items[key]):
        del mapping.ca.items[key]


def remove_key(mapping, key, parent) -> None:
    """Remove a source and its comment; the lines its token carried for the next key move onto that key."""
    if not isinstance(mapping, CommentedMap):  # plain data (a dict from load_params) has no comments
        del mapping[key]
        return
    keys = list(mapping)
    set_comment(mapping, key, parent, [], [], 0)
    tail = clear_tail(*holder(mapping, key))
    del mapping[key]
    following = keys[keys.index(key) + 1] if keys.index(key) + 1 < len(keys) else None
    if tail and following is not None and any(_is_comment(line) for line in tail):
        entry = mapping.ca.items.setdefault(following, [None, None, None, None])
        entry[1] = [_pre_token(tail)] + (entry[1] or [])


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

    files = [recipe_file(r) for r in recipes]
    for file in files:
        read_yaml(file)
    # round-trip, once each is known to be a YAML mapping: a recipe's comments go with the values they describe
    overrides = [round_trip().load(file.read_text(encoding="utf-8")) or {} for file in files]

    def merge_all(data: dict) -> None:
        for override in overrides:
            merge(data, override)

    edit(params, merge_all)


def apply(recipe: str | Path, params: str | Path = "params.yaml") -> None:
    """Merge one recipe into `params` (compose with a single recipe)."""
    compose([recipe], params)


def round_trip() -> YAML:
    """The round-trip YAML that reads recipes and rewrites params.yaml: comments and key order kept, long lines
    left whole, null written as null (ruamel writes nothing)."""
    yaml = YAML()
    yaml.width = 4096
    yaml.preserve_quotes = True  # `save_strategy: "no"` stays quoted, readable by YAML 1.1 tools as a string
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def edit(params: str | Path, change) -> None:
    """Rewrite params.yaml with `change(data)` applied, keeping its comments and key order."""
    yaml = round_trip()
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
