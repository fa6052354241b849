"""Reading a source as it is (local file or a pinned hub snapshot) into one raw table.

Raw tables keep the source's own columns. Parquet needs one type per column, and real sources do not
always have one (chai-dpo's `rejected` is a list or a string); such a column is stored as JSON text,
one value per row, and named in the file's metadata so the clean stage reads back exactly what the
source held. A JSON line that does not parse is kept as a row with only `_invalid_json` set, so the
clean stage rejects it with a reason instead of it vanishing here.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa

from ladder.errors import InputError
from ladder.records import INVALID_JSON

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
JSON_COLUMNS_KEY = b"ladder.json_columns"


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
        try:  # pyarrow infers nested types from every value (struct fields included) and refuses mixes
            columns.append(pl.from_arrow(pa.array(values)).alias(name))
        except (TypeError, ValueError, OverflowError, pa.ArrowException):
            columns.append(pl.Series(name, [None if v is None else json.dumps(v, ensure_ascii=False)
                                            for v in values], dtype=pl.String))
            json_columns.append(name)
    return pl.DataFrame(columns), json_columns


def _read_json_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]} as some hub repos keep it
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of records")
        return [r if isinstance(r, dict) else {INVALID_JSON: json.dumps(r)} for r in data]
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            json.dumps(record, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be stored
        except (json.JSONDecodeError, UnicodeEncodeError):
            record = None
        records.append(record if isinstance(record, dict) else {INVALID_JSON: line})
    return records


def read_file(path: str | Path) -> tuple[pl.DataFrame, list[str]]:
    """One data file to (frame, names of JSON-encoded columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        return pl.read_parquet(path), []
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema_length=None), []
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
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"raw table not found: {path} (run the fetch stage first)")
    table = pq.read_table(path)
    json_columns = json.loads((table.schema.metadata or {}).get(JSON_COLUMNS_KEY, b"[]"))
    frame = pl.from_arrow(table)
    for name in json_columns:
        values = [None if v is None else json.loads(v) for v in frame[name].to_list()]
        frame = frame.with_columns(pl.Series(name, values, dtype=pl.Object))
    return frame
