"""Atomic, deterministic writes: a crashed stage leaves nothing DVC could mistake for a result."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` (file or folder); rename it into place on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded, inside dicts and lists too: metrics files then hold the same bytes on every rerun
    (the last bits of a float sum depend on the order of operations)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def write_json(obj: Any, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def write_parquet(df, target: str | Path) -> None:
    """Polars frame to parquet with fixed settings, so equal frames give equal bytes."""
    with atomic_path(target) as tmp:
        df.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True)
