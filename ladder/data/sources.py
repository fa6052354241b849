"""Reading a source as it is (local file or a pinned hub snapshot) into one raw table.

Raw tables keep the source's own columns. Parquet needs one type per column, and real sources do not
always have one (chai-dpo's `rejected` is a list or a string); such a column is stored as JSON text,
one value per row, and named in the file's metadata so the clean stage reads back exactly what the
source held.

JSON Lines are split on "\n" alone (U+2028, U+0085 and the like are characters inside a string, not line breaks),
one "\r" before it dropped, blank lines skipped, a UTF-8 BOM at the start of a line (of the file, or of files
joined together) ignored. A line that is no
usable record (not UTF-8, not JSON, not an object, a lone surrogate, nested deeper than MAX_DEPTH) is kept as a
row with only `_invalid_json` (the source line) and `_invalid_reason` set, so the clean stage rejects it with its
reason instead of it vanishing here or stopping the fetch. A file that cannot be read at all (a .json list that
does not parse, a corrupt parquet or CSV) stops with an InputError naming the file and the cause.
"""
from __future__ import annotations

import codecs
import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa

from ladder.errors import InputError
from ladder.io import readable
from ladder.data.records import INVALID_JSON, INVALID_REASON

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
JSON_COLUMNS_KEY = b"ladder.json_columns"
# Records nested deeper (an object or a list is one level; these schemas need 3) are rejected. The bound is
# parquet's, not Python's: Arrow cannot read back a column of 50 nested lists or 63 structs (pyarrow 26), and a
# record that fetch writes must come back in clean. It also keeps every walk over a record far from the
# recursion limit.
MAX_DEPTH = 32
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_JSON_TYPES = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def hf_token(env_file: str | Path = ".env") -> str | None:
    """HF_TOKEN from the environment, else from a git-ignored .env; never logged or written."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    if Path(env_file).is_file():
        from dotenv import dotenv_values
        return dotenv_values(env_file).get("HF_TOKEN") or None
    return None


def _records_to_frame(records: list[dict]) -> tuple[pl.DataFrame, list[str]]:
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns, json_columns = [], []
    for name in names:
        values = [record.get(name) for record in records]
        column = _typed_column(name, values)
        if column is None:
            column = pl.Series(name, [None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
                               dtype=pl.String)
            json_columns.append(name)
        columns.append(column)
    return pl.DataFrame(columns), json_columns


def _typed_column(name: str, values: list) -> pl.Series | None:
    """The column in one type that parquet can hold, or None where it has none and must be kept as JSON text."""
    try:  # pyarrow infers nested types from every value (struct fields included) and refuses mixes
        array = pa.array(values)
        column = pl.from_arrow(array).alias(name)
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return None
    if pa.types.is_floating(array.type) and any(type(v) is not float for v in values if v is not None):
        return None  # pyarrow made integers and booleans floats: an id 1 would become 1.0, a thumbs_up true 1.0
    return None if _has_empty_struct(array.type) else column


def _has_empty_struct(kind: pa.DataType) -> bool:
    """Whether an object {} made a struct with no fields somewhere in the type: parquet cannot write one."""
    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_has_empty_struct(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_empty_struct(kind.value_type)
    return False


def _deeper_than(value, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels in `value`, level by level (no recursion)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list))]
        if not level:
            return False
    return bool(level)


def _record_problem(value, text: str | None = None) -> str | None:
    """Why a parsed JSON value is no record, or None. `text`, the source line, only lets common rows skip the
    walks: a line has no more levels than brackets and no lone surrogate without a \\ud8.. escape."""
    if (text is None or text.count("{") + text.count("[") > MAX_DEPTH) and _deeper_than(value, MAX_DEPTH):
        return _TOO_DEEP
    if not isinstance(value, dict):
        return f"a JSON {_JSON_TYPES[type(value)]}, not an object"
    if text is None or _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "not valid Unicode: a lone surrogate escape (\\ud800-\\udfff), which no UTF-8 file can hold"
    return None


def _invalid(text: str, reason: str) -> dict:
    return {INVALID_JSON: text, INVALID_REASON: reason}


def _line_record(line: bytes) -> dict:
    """One JSON line (without its line end) to a record, or to an invalid row keeping the line and the reason."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return _invalid(line.decode("utf-8", "backslashreplace"),
                        f"line is not valid UTF-8 ({err.reason} at byte {err.start})")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return _invalid(text, f"not valid JSON ({err.msg} at column {err.colno})")
    except RecursionError:
        return _invalid(text, _TOO_DEEP)
    problem = _record_problem(value, text)
    return _invalid(text, problem) if problem else value


def _json_lines(data: bytes) -> list[dict]:
    records = []
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(codecs.BOM_UTF8):  # the file's, or a part's of files joined together
            line = line[len(codecs.BOM_UTF8):]
        if line.strip():  # bytes.strip() takes ASCII whitespace only
            records.append(_line_record(line))
    return records


def _json_list(path: Path) -> list[dict]:
    """A .json file holding one list of records (or {"data": [...]}, as some hub repos keep it)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise InputError(f"{path}: {_TOO_DEEP}") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records")
    records = []
    for i, value in enumerate(data):
        problem = _record_problem(value)
        if problem:
            try:  # ASCII escapes: the text kept may hold the lone surrogate the record is rejected for
                text = json.dumps(value)
            except RecursionError:
                text = f"record {i} of {path.name}"
            records.append(_invalid(text, problem))
        else:
            records.append(value)
    return records


def _csv(path: Path) -> pl.DataFrame:
    """A CSV file, its column types inferred by polars from its valid records. A record that is not UTF-8, or has
    more or fewer fields than the header (polars would fill a short one with nulls), becomes an invalid row with its
    reason, and the others are read as if it were not there. Records are split by Python's csv module first (about
    a second for the LMSYS arena's 57k)."""
    import csv
    import io

    data = path.read_bytes()

    rows = csv.reader(io.StringIO(data.decode("utf-8-sig", "surrogateescape"), newline=""))
    header = next(rows, None)
    if not header:
        raise InputError(f"{path}: not a readable CSV file (no header line)")
    if any(_escaped(f) for f in header):
        raise InputError(f"{path}: not a readable CSV file (the header line is not UTF-8)")
    good, invalid = io.StringIO(), []
    writer = csv.writer(good, lineterminator="\n")
    writer.writerow(header)
    for fields in rows:
        text = ",".join(fields).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if any(_escaped(f) for f in fields):
            invalid.append(_invalid(text, "record is not valid UTF-8"))
        elif len(fields) != len(header):
            invalid.append(_invalid(text, f"record has {len(fields)} fields, the header {len(header)}"))
        elif fields:
            writer.writerow(fields)
    frame = readable(path, "CSV", lambda _: pl.read_csv(good.getvalue().encode(), infer_schema_length=None))
    return pl.concat([frame, pl.DataFrame(invalid, schema={INVALID_JSON: pl.String, INVALID_REASON: pl.String})],
                     how="diagonal") if invalid else frame


def _escaped(field: str) -> bool:
    """Whether a field decoded with surrogateescape held bytes that are not UTF-8."""
    return any("\udc80" <= c <= "\udcff" for c in field)


def _read_json_records(path: Path) -> list[dict]:
    return _json_list(path) if path.suffix == ".json" else _json_lines(path.read_bytes())


def read_file(path: str | Path) -> tuple[pl.DataFrame, list[str]]:
    """One data file to (frame, names of JSON-encoded columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        return readable(path, "parquet", pl.read_parquet), []
    if path.suffix == ".csv":
        return readable(path, "CSV", _csv), []
    if path.suffix in (".jsonl", ".json"):
        return _records_to_frame(_read_json_records(path))
    raise InputError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")


def split_files(folder: Path, split: str | None, patterns: list[str] | None = None) -> list[Path]:
    """The data files of a hub snapshot for one split, laid out as the hub lays them out
    (data/train-00000-of-00002.parquet, train.csv, ...); with `patterns` (globs on the path inside the
    snapshot, `*` crossing folders) only the files they match, e.g. one config of a repository that holds two."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and not p.name.startswith("dataset_info"))  # the hub's metadata, not data
    if patterns:
        files = [p for p in files if any(fnmatch.fnmatchcase(p.relative_to(folder).as_posix(), g) for g in patterns)]
    if split:
        token = re.compile(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)")
        files = [p for p in files if token.search(p.relative_to(folder).as_posix())]
    if not files:
        raise FileNotFoundError(f"no {'/'.join(SUFFIXES)} files for split {split!r}"
                                f"{f' among {patterns}' if patterns else ''} in {folder}")
    return files


def download_dataset(repo_id: str, revision: str, token: str | None, patterns: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token,
                                  allow_patterns=patterns or [f"*{s}" for s in SUFFIXES]))


def read_source(spec: dict, name: str, downloader: Callable[..., Path] = download_dataset
                ) -> tuple[pl.DataFrame, list[str]]:
    """A source entry of params `fetch.sources` to one raw table: a local `path`, or a `hub` dataset at a pinned
    `revision`, its files picked by `split` and, optionally, `files` (a glob or a list of globs)."""
    if "path" in spec and spec["path"]:
        files = [Path(spec["path"])]
    elif spec.get("hub"):
        if not spec.get("revision"):
            raise InputError(f"source {name!r}: a hub source needs a pinned `revision` (a commit hash)")
        patterns = [spec["files"]] if isinstance(spec.get("files"), str) else spec.get("files") or None
        files = split_files(downloader(spec["hub"], spec["revision"], hf_token(), patterns), spec.get("split"),
                            patterns)
    else:
        raise InputError(f"source {name!r}: give either `path` or `hub` (+ `revision`)")
    if len(files) == 1:
        return read_file(files[0])
    # Shards of one split may disagree on a column's type: build one table from every record, so the
    # type (or the JSON encoding of a mixed column) is decided once, over all of them.
    records = []
    for file in files:
        records += _read_json_records(file) if file.suffix in (".jsonl", ".json") else read_file(file)[0].to_dicts()
    return _records_to_frame(records)


def write_raw(frame: pl.DataFrame, json_columns: list[str], target: str | Path) -> None:
    import pyarrow.parquet as pq

    from ladder.io import atomic_path

    table = frame.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           JSON_COLUMNS_KEY: json.dumps(sorted(json_columns)).encode()})
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_raw(path: str | Path) -> pl.DataFrame:
    """A raw table back, with JSON-encoded columns decoded to Python objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"raw table not found: {path} (run the fetch stage first)")
    return readable(path, "parquet", _raw_table)


def _raw_table(path: Path) -> pl.DataFrame:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table.validate(full=True)  # a flipped byte in a string page would otherwise panic inside polars, not raise
    json_columns = json.loads((table.schema.metadata or {}).get(JSON_COLUMNS_KEY, b"[]"))
    frame = pl.from_arrow(table)
    for name in json_columns:
        values = [None if v is None else json.loads(v) for v in frame[name].to_list()]
        frame = frame.with_columns(pl.Series(name, values, dtype=pl.Object))
    return frame
