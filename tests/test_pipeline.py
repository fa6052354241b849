"""End to end: real `dvc repro` on the smoke settings in a temporary git repository."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ladder.params import load_params

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's files (what git would commit) with the smoke params, as a fresh repo."""
    root = tmp_path_factory.mktemp("ladder")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        if name == "dvc.lock" or name.startswith("metrics/") or not (REPO / name).is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    subprocess.run([sys.executable, "-m", "ladder.recipes", "smoke"], cwd=root, check=True)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "smoke"], root)
    return root


def test_repro_runs_everything_then_nothing(project):
    sources = list(load_params(project / "params.yaml")["fetch"]["sources"])
    first = run(["dvc", "repro"], project)
    assert ran(first) == {*(f"fetch@{s}" for s in sources), "fetch_model@base", "fetch_model@judge", "clean",
                          "reward", "score", "sft", "dpo", "merge", "quantize", "classifier", "inference",
                          "metrics"}
    for name in sources:
        assert pl.read_parquet(project / f"data/raw/{name}.parquet").height > 0
    for table in ("conversations", "preferences", "feedback", "arena"):
        assert pl.read_parquet(project / f"data/clean/{table}.parquet").height > 0
    assert (project / "models/base/config.json").is_file() and (project / "models/judge_base/config.json").is_file()
    metrics = json.loads((project / "metrics/clean.json").read_text())
    for name, m in metrics["sources"].items():
        assert m["used"] + m["rejected"] == m["rows"] > 0, name
    for stage in ("clean", "reward", "score", "sft", "dpo", "merge", "quantize", "judge", "eval"):
        numbers = re.findall(r'": (-?[0-9.eE+-]+|NaN|Infinity)[,\n]', (project / f"metrics/{stage}.json").read_text())
        assert numbers and all(math.isfinite(float(x)) for x in numbers), stage
    assert (project / "models/merged/model.safetensors").is_file() and (project / "models/merged/README.md").is_file()
    quantized = json.loads((project / "metrics/quantize.json").read_text())["formats"]
    smoke = load_params(project / "params.yaml")["quantize"]
    assert set(quantized) == {"int8", "nf4", *(f"gguf-{t}" for t in smoke["gguf_types"])}
    assert all((project / "models/quantized" / f / "model.safetensors").is_file() for f in ("int8", "nf4"))
    judge = json.loads((project / "metrics/judge.json").read_text())
    assert judge["eval_rows"] > 0 and 0 <= judge["accuracy_tta"] <= 1 and "position_flip_rate" in judge
    assert (project / "models/judge/head.safetensors").is_file() and (project / "plots/judge/confusion.json").is_file()
    params = load_params(project / "params.yaml")["inference"]
    responses = pl.read_parquet(project / "data/generations/responses.parquet")
    assert responses.height == len(params["models"]) * params["n_prompts"]
    judged = pl.read_parquet(project / "data/generations/judgments.parquet")
    models = len(params["models"])
    assert judged.height == params["n_prompts"] * models * (models - 1) // 2
    report = json.loads((project / "metrics/eval.json").read_text())
    assert set(report["models"]) == set(params["models"]) and report["models"]["base"]["elo"] == 1000.0
    for figures in report["models"].values():
        assert math.isfinite(figures["elo"]) and figures["elo_95"][0] <= figures["elo"] <= figures["elo_95"][1]
    assert set(report["stages"]) == {"reward", "sft", "dpo", "merge", "judge", "quantize"}
    assert len(json.loads((project / "plots/eval/elo.json").read_text())) == models
    second = run(["dvc", "repro"], project)
    assert ran(second) == set() and "up to date" in second


def test_a_judge_variant_reruns_only_the_judge_and_what_reads_it(project):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the smoke run's results"], project)
    output = run(["dvc", "exp", "run", "-S", "classifier.head_dropout=0.2"], project)
    assert ran(output) == {"classifier", "inference", "metrics"}
    shown = run(["dvc", "exp", "show", "--md", "--no-pager"], project)
    assert "head_dropout" in shown and "0.2" in shown


def test_forced_clean_gives_the_same_bytes(project):
    outputs = [*(project / "data/clean").glob("*.parquet"), project / "metrics/clean.json"]
    before = {p.name: md5(p) for p in outputs}
    run(["dvc", "repro", "--force", "--single-item", "clean"], project)
    assert {p.name: md5(p) for p in outputs} == before


def test_changing_the_filter_reruns_scoring_only(project):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("filter: {keep_top: 0.9}", "filter: {keep_top: 0.5}"))
    # `dvc repro score`, not the whole pipeline: what follows score is DVC's own propagation, and the test
    # suite's time is better spent elsewhere; `dvc status` shows that sft would rerun next
    output = run(["dvc", "repro", "score"], project)
    assert ran(output) == {"score"}
    metrics = json.loads((project / "metrics/score.json").read_text())
    assert metrics["sft"]["train"]["kept"] == round(0.5 * metrics["sft"]["train"]["scored"])
    assert "sft:" in run(["dvc", "status", "sft"], project)


def test_changing_one_source_reruns_only_its_fetch_and_clean(project):
    custom = project / "data/custom/anime.jsonl"
    custom.parent.mkdir(parents=True)
    lines = (project / "data/samples/roleplay_anime.jsonl").read_text().splitlines(keepends=True)
    custom.write_text("".join(lines[:40]))
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("data/samples/roleplay_anime.jsonl", "data/custom/anime.jsonl"))
    output = run(["dvc", "repro", "score", "classifier"], project)
    # reward reads feedback only and the judge the arena table: neither changed
    assert ran(output) == {"fetch@anime", "clean", "score"}
    assert json.loads((project / "metrics/clean.json").read_text())["sources"]["anime"]["rows"] == 40
