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
import time
from pathlib import Path

import polars as pl
import pytest

from ladder.params import load_params

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", **(env or {})}
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
    subprocess.run([sys.executable, "-m", "ladder.tools.recipes", "smoke"], cwd=root, check=True)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "smoke"], root)
    return root


def test_repro_runs_everything_then_nothing(project):
    sources = list(load_params(project / "params.yaml")["fetch"]["sources"])
    first = run(["dvc", "repro"], project)
    assert ran(first) == {*(f"fetch@{s}" for s in sources), "fetch_model@base", "fetch_model@judge",
                          "fetch_model@reward", "clean",
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
    records = json.loads((project / "metrics/records.json").read_text())  # what DVC compares of the clean stage
    for table in ("conversations", "preferences", "feedback", "arena"):
        assert sum(records[table].values()) == pl.read_parquet(project / f"data/clean/{table}.parquet").height
    assert records["rejected_rows"] == metrics["rejected_rows"] > 0
    for stage in ("clean", "records", "reward", "score", "sft", "dpo", "merge", "quantize", "judge", "eval",
                  "headlines"):
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
    names = [*params["models"], *params["controls"]]  # controls are scored and judged like models
    responses = pl.read_parquet(project / "data/generations/responses.parquet")
    assert responses.height == len(names) * params["n_prompts"]
    assert set(responses.filter(pl.col("control"))["model"]) == set(params["controls"])
    judged = pl.read_parquet(project / "data/generations/judgments.parquet")
    assert judged.height == params["n_prompts"] * len(names) * (len(names) - 1) // 2
    identical = pl.read_parquet(project / "data/generations/identical.parquet")
    assert identical.height == params["n_prompts"] * len(names)
    report = json.loads((project / "metrics/eval.json").read_text())
    assert next(iter(report)) == "validity" and isinstance(report["validity"]["valid"], bool)
    assert set(report["validity"]["checks"]) == {"identical_pairs", "flip_rate", "control_separation",
                                                  "judge_reward_agreement", "length"}
    assert set(report["models"]) == set(names) and report["models"]["base"]["elo"] == 1000.0
    for figures in report["models"].values():
        assert math.isfinite(figures["elo"]) and figures["elo_95"][0] <= figures["elo"] <= figures["elo_95"][1]
    assert set(report["stages"]) == {"reward", "sft", "dpo", "merge", "judge", "quantize"}
    assert len(json.loads((project / "plots/eval/elo.json").read_text())) == len(names)
    assert len(json.loads((project / "reports/examples.json").read_text())["examples"]) == 3
    second = run(["dvc", "repro"], project)
    assert ran(second) == set() and "up to date" in second
    # a local source's stage depends on its own file: a new file beside it changes nothing, an edit reruns one fetch
    (project / "data/samples/new_source.jsonl").write_text('{"messages": []}\n')
    assert "up to date" in run(["dvc", "status"], project)
    sample = project / load_params(project / "params.yaml")["fetch"]["sources"]["anime"]["path"]
    kept = sample.read_bytes()
    sample.write_bytes(kept + b'{"messages": [{"role": "user", "content": "hi"}]}\n')
    status = subprocess.run([Path(sys.executable).parent / "dvc", "status", "--json"], cwd=project,
                            capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    changed = json.loads(status.stdout)
    assert {s for s in changed if s.startswith("fetch")} == {"fetch@anime"}, changed
    sample.write_bytes(kept)
    (project / "data/samples/new_source.jsonl").unlink()


@pytest.fixture
def s3():
    """A local S3 (moto's server) on 127.0.0.1 with the bucket of the committed remote, and the only
    credentials DVC gets: environment variables."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "ladder-test-key-id", "AWS_SECRET_ACCESS_KEY": "ladder-test-secret-0xFACED",
           "AWS_EC2_METADATA_DISABLED": "true"}
    bucket = re.search(r"url = s3://([^/\s]+)", (REPO / ".dvc/config").read_text()).group(1)
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=bucket)
    yield {"endpoint": f"http://{host}:{port}", "env": env, "client": client, "bucket": bucket}
    server.stop()


def test_push_to_s3_then_a_fresh_clone_pulls_and_runs_nothing(project, s3, tmp_path):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the smoke run's results"], project)
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", s3["endpoint"]], project)
    pushed = run(["dvc", "push", "--run-cache"], project, s3["env"])
    assert re.search(r"\d+ files? pushed", pushed), pushed
    keys = [o["Key"] for page in s3["client"].get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"])
            for o in page.get("Contents", [])]
    assert any("/files/md5/" in k for k in keys) and any("/runs/" in k for k in keys)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", s3["endpoint"]], clone)
    run(["dvc", "pull"], clone, s3["env"])
    assert md5(clone / "models/merged/model.safetensors") == md5(project / "models/merged/model.safetensors")
    again = run(["dvc", "repro"], clone, s3["env"])
    assert ran(again) == set() and "up to date" in again
    # credentials never reach what is committed or what DVC writes
    for folder in (project, clone):
        for name in (".dvc/config", ".dvc/config.local", "dvc.lock", "params.yaml"):
            assert s3["env"]["AWS_SECRET_ACCESS_KEY"] not in (folder / name).read_text()


def queue_finished(project: Path) -> bool:
    status = run(["dvc", "queue", "status"], project)
    return not re.search(r"\b(Queued|Running)\b", status)


def test_queued_experiments_run_two_at_a_time_each_rerunning_what_its_setting_reaches(project):
    """A judge setting and the KTO preference method (one entry of ladder/training/preference.py, one setting here), queued
    and run side by side: each reruns what reads its setting and nothing upstream, and carries its own metrics."""
    settings = {"lr": "classifier.trainer.learning_rate=4e-3", "kto": "dpo.method=kto"}
    for name, setting in settings.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", setting], project)
    run(["dvc", "queue", "start", "-j", "2"], project)
    deadline = time.monotonic() + 600
    while not queue_finished(project):
        assert time.monotonic() < deadline, run(["dvc", "queue", "status"], project)
        time.sleep(3)
    status = run(["dvc", "queue", "status"], project)
    assert status.count("Success") == len(settings), status
    assert ran(run(["dvc", "queue", "logs", "lr"], project)) == {"classifier", "inference", "metrics"}
    assert ran(run(["dvc", "queue", "logs", "kto"], project)) == {"dpo", "merge", "quantize", "inference", "metrics"}
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=project, capture_output=True,
                           text=True, check=True)
    runs = {rev["name"]: rev["data"] for baseline in json.loads(shown.stdout)
            for exp in baseline.get("experiments") or [] for rev in exp["revs"] if rev.get("name") in settings}
    assert set(runs) == set(settings), list(runs)
    # metrics/headlines.json holds what DVC compares of the later stages: each run carries its own
    evals = {name: runs[name]["metrics"]["metrics/headlines.json"]["data"] for name in settings}
    judge = {name: evals[name]["judge"] for name in settings}
    assert runs["lr"]["params"]["params.yaml"]["data"]["classifier"]["trainer"]["learning_rate"] == 4e-3
    # the lr run trained its own judge; the kto run kept the baseline's judge and trained KTO instead of DPO
    assert judge["lr"]["log_loss_tta"] != judge["kto"]["log_loss_tta"]
    assert set(evals["kto"]["kto"]) == {"reward_margin", "kl"} and "dpo" not in evals["kto"]
    assert all(math.isfinite(v) for v in evals["kto"]["kto"].values())
    assert "dpo" in evals["lr"] and "kto" not in evals["lr"]
    assert set(runs["kto"]["metrics"]) == {"metrics/headlines.json", "metrics/records.json"}


def test_another_judge_backbone_reruns_only_the_judge_side(project):
    # the reward model has its own backbone: the training data and chat models stay as they are
    output = run(["dvc", "exp", "run", "-S", f"fetch.judge_revision={'a' * 40}"], project)
    # (metrics reruns only if the judgments changed: the tiny backbone's weights do not depend on the revision)
    judge_side = {"fetch_model@judge", "classifier", "inference"}
    assert judge_side <= ran(output) <= judge_side | {"metrics"}


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
