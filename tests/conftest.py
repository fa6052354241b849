"""Shared test fixtures."""
import json
from pathlib import Path

import pytest

from ladder.params import read_yaml
from ladder.tools.recipes import merge

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def write_params():
    """`write_params(path, overrides)`: the repository's params.yaml with `overrides` merged in key by key,
    written to `path`. Stages check every section of their params file, so a stage test runs on complete
    params and changes only what it tests."""
    def write(path: Path, overrides: dict) -> Path:
        path.write_text(json.dumps(merge(read_yaml(REPO / "params.yaml"), overrides)))  # JSON is YAML
        return path

    return write
