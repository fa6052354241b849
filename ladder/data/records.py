"""The unified records every later stage reads (docs/data.md).

A message is {role: system|user|assistant, content}. Every table also carries `source` and `row` (the
source row it came from), so that each source row can be shown to be used or rejected, never both.
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import xxhash

from ladder.errors import InputError

ROLES = ("system", "user", "assistant")
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)

_KEY = {"id": pl.String, "source": pl.String, "row": pl.String}
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "conversations": {**_KEY, "messages": MESSAGES, "thumbs_up": pl.Boolean},
    "preferences": {**_KEY, "prompt": MESSAGES, "chosen": pl.String, "rejected": pl.String},
    "feedback": {**_KEY, "messages": MESSAGES, "label": pl.Float64},
    "arena": {**_KEY, "prompt": pl.String, "response_a": pl.String, "response_b": pl.String,
              "winner": pl.String, "language": pl.String},
    "rejects": {"source": pl.String, "row": pl.String, "reason": pl.String, "raw": pl.String},
}
TABLES = ("conversations", "preferences", "feedback", "arena")
INVALID_JSON = "_invalid_json"  # the column a source line that is not a JSON object is kept in (fetch -> clean)
# beside it, why the line is no record ("not valid JSON (...)", "a JSON array, not an object", ...)
INVALID_REASON = "_invalid_reason"
WINNERS = ("model_a", "model_b", "tie")


def require_columns(df: pl.DataFrame, columns, where: str | None = None) -> None:
    """Stop with an InputError (a ValueError) naming the columns of `columns` that `df` lacks, and `where` it was read from."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        what = f"column {names} is missing" if len(missing) == 1 else f"columns {names} are missing"
        raise InputError(f"{where}: {what}" if where else what)


# Parquet metadata of a table the pipeline filters: {"<param> = <value>": records it removed, ...}, in the order the
# filters ran, carried from table to table (clean -> score), so that a stage left with too few rows can say which
# params emptied its input without reading any file it does not declare.
REMOVED_BY = "ladder.removed_by"


def removed_by(path: str | Path) -> dict[str, int]:
    """What the filters upstream of the table at `path` removed, by param (REMOVED_BY); {} where it says nothing."""
    raw = pl.read_parquet_metadata(path).get(REMOVED_BY)
    return json.loads(raw) if raw else {}


def removed_by_metadata(removed: dict[str, int]) -> dict[str, str]:
    return {REMOVED_BY: json.dumps({k: v for k, v in removed.items() if v}, ensure_ascii=False)}


def require_rows(df: pl.DataFrame, path: str | Path, stage: str, need: dict[str, int]) -> None:
    """Stop with one line when `df` (the table at `path`) has fewer rows in a split than `need` says `stage` needs
    to train and evaluate, naming the counts and the params upstream that removed rows (largest first), before the
    stage writes or deletes anything."""
    require_counts({split: df.filter(pl.col("split") == split).height for split in need}, [path], stage, need)


def require_counts(counts: dict[str, int], paths: list[str | Path], stage: str, need: dict[str, int]) -> None:
    """require_rows for rows counted from the tables at `paths` (the judge's come from two)."""
    if all(counts[s] >= n for s, n in need.items()):
        return
    have = ", ".join(f"{n} {s}" for s, n in counts.items())
    wants = " and ".join(f"{n} {s}" for s, n in need.items())
    removed: dict[str, int] = {}
    for path in paths:
        for key, n in removed_by(path).items():
            removed[key] = removed.get(key, 0) + n
    why = ("; removed upstream: " + ", ".join(f"{k} ({n} records)" for k, n in
                                             sorted(removed.items(), key=lambda kv: -kv[1]))) if removed else \
        "; no filter removed any (metrics/clean.json counts the source rows clean rejected; clean.eval_fraction sets the eval share)"
    raise InputError(f"{' + '.join(map(str, paths))} {'has' if len(paths) == 1 else 'have'} {have} rows; "
                     f"{stage} needs at least {wants}{why}")


def _key(parts: tuple) -> bytes:
    return "\x1f".join(map(str, parts)).encode("utf-8")


def stable_id(*parts: object) -> str:
    """A short content hash (XXH3-64, a fixed specification): the same on every machine and Python
    version, unlike hash()."""
    return xxhash.xxh3_64_hexdigest(_key(parts))


def stable_ids(prefix: tuple, rows: list, suffix: tuple = ()) -> list[str]:
    """stable_id(*prefix, row, *suffix) for many rows at once (the large sources have 10^5 rows)."""
    head = "".join(f"{p}\x1f" for p in prefix)
    tail = "".join(f"\x1f{p}" for p in suffix)
    return [xxhash.xxh3_64_hexdigest(f"{head}{r}{tail}".encode("utf-8")) for r in rows]


def unit_interval(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) derived from `parts` (for splits and sampling)."""
    return xxhash.xxh3_64_intdigest(_key(parts)) / 2**64


def empty(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMAS[table])


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMAS[table], orient="row") if rows else empty(table)


def normalize_text(text: str) -> str:
    """Line ends to LF and surrounding blanks trimmed; the characters themselves stay as they are."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()
