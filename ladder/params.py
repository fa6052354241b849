"""Reading params.yaml the way DVC writes it.

`dvc exp run -S sft.lr=3e-5` writes `3e-05`, which YAML 1.1 loaders (PyYAML) read as a string.
ruamel.yaml's safe loader follows YAML 1.2 and reads it as a float.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path.resolve()}")
    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    return data or {}


def section(name: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    params = load_params(path)
    if name not in params:
        raise KeyError(f"params file {path} has no '{name}' section")
    return params[name]
