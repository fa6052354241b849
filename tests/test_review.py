"""The pull-request review (ladder.tools.review), the timing files' command (ladder.tools.timings) and the workflow that
posts the review. Fast: fixture files and small git / dvc repositories, no models."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ladder.tools import timings
from ladder.tools.review import render, review, review_params, within

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "review"
TOL = (1e-5, 1e-3)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def rendered(**changed) -> str:
    args = dict(base="main", evaluation=fixture("eval.json"), base_evaluation=fixture("eval_base.json"),
                found_examples=fixture("examples.json"), params_diff={}, metrics_diff={}, tol=TOL, n_examples=3)
    return render(**{**args, **changed})


def test_the_verdict_comes_first_with_its_reasons_and_failed_checks():
    text = rendered()
    first = text.split("\n\n")[1]
    assert first.startswith("**Ladder NOT valid**: flip rate 0.41 on generated pairs is above 0.2; "
                            "P(reference beats shuffled) interval [0.44, 0.61] is not above 0.5")
    assert "| flip_rate | 0.41 | 0.2 | **FAIL** |  |" in text
    assert "| control_separation | 0.53 | 0.5 | **FAIL** | interval [0.44, 0.61] |" in text
    assert "| identical_pair_bias | 0.021 | 0.05 | pass |  |" in text
    order = [text.index(s) for s in ("Ladder NOT valid", "### The ladder", "### Replies side by side",
                                     "### Params changed", "### Metrics changed")]
    assert order == sorted(order)

    valid = fixture("eval.json")
    valid["validity"] = {"valid": True, "reasons": [], "checks": {}}
    assert rendered(evaluation=valid).split("\n\n")[1] == "**Ladder valid**"


def test_the_ladder_is_sorted_by_rating_with_the_base_revisions_rating_beside_it():
    lines = [line for line in rendered().splitlines() if re.match(r"\| \d+ \| `", line)]
    assert [line.split("|")[2].strip() for line in lines] == [
        "`reference` (control)", "`shuffled` (control)", "`merged`", "`sft`", "`base` (anchor)"]
    assert "| # | model | Elo | 95% interval | win rate vs `base` | mean reward | length-controlled Elo | " \
           "Elo at `main` |" in rendered()
    assert "| 3 | `merged` | 1061.3 | [1032.0, 1090.4] | 0.643 | 0.587 | 1055.0 | 1003.8 |" in lines
    assert "| 1 | `reference` (control) | 1121.9 | [1090.2, 1150.1] | 0.731 | 0.702 | - | - |" in lines
    assert "NOT valid, read the ratings with the verdict above" in rendered()


def test_three_examples_side_by_side_escaped():
    text = rendered()
    assert text.count("**1. prompt `chai-7f3a`**") == 1
    assert "prompt `anime-0c11`" in text and "prompt `hieu-91be`" in text and "chai-2d40" not in text
    assert text.count("| `base` | `merged` | `reference` |") == 3
    # Pipes, newlines and markup stay inside their cell: a `|` would split the row, `<...>` vanish on GitHub.
    assert "> **user**: Just a traveller \\| lost.<br>Can I rest here?" in text
    assert "| Sure, you can rest. | *eyes narrow* Rest, then. &lt;But touch nothing.&gt; | *sighs* The steps" in text
    assert "> **system**: You are Kira, a fox spirit who guards the shrine.  " in text
    assert f"> **user**: {'x' * 600} …" in rendered(found_examples={**fixture("examples.json"), "examples": [
        {"prompt_id": "long", "context": [{"role": "user", "content": "x" * 5000}], "replies": {}}]})
    assert "prompt `anime-0c11`" in rendered(n_examples=2) and "hieu-91be" not in rendered(n_examples=2)


def test_missing_files_and_keys_are_said_in_one_line():
    text = rendered(found_examples=None, base_evaluation=None)
    assert "No `reports/examples.json` in this branch: no replies to show." in text
    assert "Elo at" not in text
    old = fixture("eval_base.json")              # an old revision's eval.json: no validity, no controls
    text = rendered(evaluation=old, base_evaluation=old)
    assert text.split("\n\n")[1] == ("No validity verdict in `metrics/eval.json` (written by code older than "
                                     "the ladder's validity checks).")
    assert "| 1 | `merged` | 1003.8 | [999.9, 1008.0] | 0.508 | 0.689 | 1003.8 |" in text
    assert "No `metrics/eval.json` in this branch" in rendered(evaluation=None)
    broken = {"anchor": "base", "best_model": "merged", "examples": [{"prompt_id": "x", "replies": {"base": "hi"}}]}
    assert "| hi | - |" in rendered(found_examples=broken)


def test_metric_changes_within_the_tolerance_are_counted_not_listed():
    metrics = {"metrics/eval.json": {
        "models.merged.elo": {"old": 1003.8, "new": 1061.3, "diff": 57.5},
        "models.sft.elo": {"old": 1003.8, "new": 1004.3, "diff": 0.5},                  # 5e-4 relative
        "judge_reward_agreement": {"old": 0.430556, "new": 0.430601, "diff": 4.5e-5},   # 1e-4 relative
        "stages.quantize.gguf-f16.kl_mean": {"old": 3e-6, "new": 8e-6, "diff": 5e-6},    # absolute floor
        "stages.merge.max_abs_logit_difference": {"old": 1.886e-5, "new": 3.1e-5, "diff": 1.2e-5},
        "validity.valid": {"old": None, "new": False}},
        "metrics/timings/sft.json": {"train_seconds": {"old": 377.4, "new": None}}}
    params = {"params.yaml": {"sft.trainer.learning_rate": {"old": 1e-4, "new": 3e-5}}}
    text = rendered(metrics_diff=metrics, params_diff=params)
    assert "| metrics/eval.json | models.merged.elo | 1003.8 | 1061.3 | 57.5 |" in text
    assert "| metrics/eval.json | stages.merge.max_abs_logit_difference | 1.886e-05 | 3.1e-05 | 1.2e-05 |" in text
    assert "| metrics/eval.json | validity.valid | - | no |  |" in text
    metrics_part = text.split("### Metrics")[1]
    assert "models.sft.elo" not in metrics_part and "judge_reward_agreement" not in metrics_part
    assert "kl_mean" not in metrics_part
    assert "3 metrics changed by less than the tolerance (absolute 1e-05, relative 0.001" in text
    assert "timings/sft.json" not in text and "ladder timings --diff main" in text
    assert "| params.yaml | sft.trainer.learning_rate | 0.0001 | 3e-05 |  |" in text
    assert "models.sft.elo" in rendered(metrics_diff=metrics, show_all=True)
    quiet = {"metrics/eval.json": {"models.sft.elo": {"old": 1003.8, "new": 1004.3, "diff": 0.5}}}
    assert "No metrics changed beyond the tolerance." in rendered(metrics_diff=quiet)


def test_within_is_symmetric_and_ignores_non_numbers():
    assert within(1000.0, 1000.9, *TOL) and within(1000.9, 1000.0, *TOL) and not within(1000.0, 1001.1, *TOL)
    assert within(0.0, 9e-6, *TOL) and not within(0.0, 2e-5, *TOL)
    assert not within(True, False, *TOL) and not within(None, 1.0, *TOL) and not within("a", "a", *TOL)


def test_review_params_are_required_by_name():
    assert review_params({"review": {"examples": 3, "tolerance": {"absolute": 1e-5, "relative": 1e-3}}}) == \
        ((1e-5, 1e-3), 3)
    with pytest.raises(SystemExit, match=r"tolerance.relative = '1e-3': expected a number, not a number in quotes"):
        review_params({"review": {"examples": 3, "tolerance": {"absolute": 1e-5, "relative": "1e-3"}}})
    with pytest.raises(SystemExit, match=r"^ladder.tools.review: params.yaml: review: tolerance: missing"):
        review_params({"review": {"examples": 3}})
    with pytest.raises(SystemExit, match=r"^ladder.tools.review: params.yaml: review: missing"):
        review_params({})
    with pytest.raises(SystemExit, match=r"review: examples = -1: Input should be greater than or equal to 0"):
        review_params({"review": {"examples": -1, "tolerance": {"absolute": 1e-5, "relative": 1e-3}}})


def git_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


def test_review_of_a_real_revision_through_git_and_dvc(tmp_path, monkeypatch):
    """Base: the old layout (timings declared as metrics, no validity, no examples). Head: timings as outs."""
    env = git_env()

    def run(*cmd):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)

    def stage(timings_as: str) -> str:
        timing = "      - metrics/timings/train.json:\n          cache: false\n"
        outs = "    outs:\n      - model.txt\n" + (timing if timings_as == "outs" else "")
        metrics = "    metrics:\n      - metrics/eval.json:\n          cache: false\n" + (
            timing if timings_as == "metrics" else "")
        return f"stages:\n  train:\n    cmd: echo\n    params: [train]\n{outs}{metrics}"

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (tmp_path / "metrics/timings").mkdir(parents=True)
    (tmp_path / "model.txt").write_text("x")
    old = fixture("eval_base.json")
    (tmp_path / "dvc.yaml").write_text(stage("metrics"))
    (tmp_path / "params.yaml").write_text("train:\n  lr: 1.0e-04\n  steps: 10\n")
    (tmp_path / "metrics/eval.json").write_text(json.dumps(old))
    (tmp_path / "metrics/timings/train.json").write_text(json.dumps({"seconds": 5.0}))
    run("git", "add", "-A")
    run("git", "commit", "-qm", "base")

    new = fixture("eval.json")
    new["judge_reward_agreement"] = 0.430601            # float noise: counted, not listed
    (tmp_path / "dvc.yaml").write_text(stage("outs"))
    (tmp_path / "params.yaml").write_text("train:\n  lr: 3e-05\n  steps: 10\nreview:\n  examples: 3\n"
                                          "  tolerance: {absolute: 1.0e-05, relative: 1.0e-03}\n")
    (tmp_path / "metrics/eval.json").write_text(json.dumps(new))
    (tmp_path / "metrics/timings/train.json").write_text(json.dumps({"seconds": 7.0}))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/examples.json").write_text((FIXTURES / "examples.json").read_text())
    run("git", "add", "-A")
    run("git", "commit", "-qm", "head")
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.chdir(tmp_path)

    text = review("HEAD~1")
    assert text.split("\n\n")[1].startswith("**Ladder NOT valid**")
    assert "| 3 | `merged` | 1061.3 | [1032.0, 1090.4] | 0.643 | 0.587 | 1055.0 | 1003.8 |" in text
    assert text.count("| `base` | `merged` | `reference` |") == 3
    assert "| params.yaml | train.lr | 0.0001 | 3e-05 |" in text and "train.steps" not in text
    assert "| metrics/eval.json | models.merged.elo | 1003.8 | 1061.3 | 57.5 |" in text
    assert "1 metric changed by less than the tolerance" in text and "| judge_reward_agreement |" not in text.split("### Metrics")[1]
    assert "metrics/timings" not in text                 # declared a metric at the base, an out now

    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=True)
    assert list(json.loads(shown.stdout)[""]["data"]) == ["metrics/eval.json"]


# ---------------------------------------------------------------------------------------- the timing files
def run_timings(*args: str) -> None:
    """`python -m ladder.tools.timings ARGS` in this process: its output reaches capsys, its SystemExit the test."""
    timings.main.main(list(args), prog_name="timings", standalone_mode=False)


def test_timings_print_a_table_per_stage(tmp_path, capsys):
    folder = tmp_path / "timings"
    folder.mkdir()
    (folder / "clean.json").write_text(json.dumps({"seconds": 0.49, "parse": {"chai": {"rows": 700}}}))
    (folder / "sft.json").write_text(json.dumps({"train_seconds": 377.41, "train_tokens_per_second": 32.1}))
    run_timings("--dir", str(folder))
    out = capsys.readouterr().out
    assert out.splitlines()[:4] == ["clean", "  figure           value", "  seconds          0.49",
                                    "  parse.chai.rows  700"]
    assert "sft\n  figure                   value\n  train_seconds            377.41\n" in out
    run_timings("--dir", str(folder), "--json")
    assert json.loads(capsys.readouterr().out)["clean"]["parse"]["chai"]["rows"] == 700
    with pytest.raises(SystemExit, match="no folder"):
        run_timings("--dir", str(tmp_path / "nowhere"))


def test_timings_beside_a_revision(tmp_path, monkeypatch, capsys):
    env = git_env()
    folder = tmp_path / "metrics/timings"
    folder.mkdir(parents=True)

    def commit(figures: dict[str, dict]):
        for stage, values in figures.items():
            (folder / f"{stage}.json").write_text(json.dumps(values))
        subprocess.run(["git", "add", "-A"], cwd=tmp_path, env=env, check=True)
        subprocess.run(["git", "commit", "-qm", "x"], cwd=tmp_path, env=env, check=True)

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, env=env, check=True)
    commit({"merge": {"seconds": 80.0, "backend": "hf"}})
    commit({"merge": {"seconds": 100.0, "backend": "hf"}, "score": {"texts_per_second": 23.3}})
    monkeypatch.chdir(tmp_path)
    run_timings("--diff", "HEAD~1")
    out = capsys.readouterr().out
    assert "merge\n  figure   HEAD~1  now  change\n  seconds  80      100  x1.25\n  backend  hf      hf\n" in out
    assert "score\n  figure            HEAD~1  now   change\n  texts_per_second  -       23.3\n" in out
    run_timings("--diff", "HEAD~1", "--json")
    assert json.loads(capsys.readouterr().out)["old"] == {"merge": {"seconds": 80.0, "backend": "hf"}}
    with pytest.raises(SystemExit, match="no revision 'nope'"):
        run_timings("--diff", "nope")


# --------------------------------------------------------------------------- the project's own configuration
def test_no_timing_file_is_a_dvc_metric():
    stages = YAML(typ="safe", pure=True).load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        for kind in ("outs", "metrics"):
            for entry in stage.get(kind, []):
                path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                if path.startswith("metrics/timings/"):
                    declared[path] = (name, kind, options.get("cache", True))
    assert declared and all(kind == "outs" and cache is False for _, kind, cache in declared.values())
    assert {name for name, _, _ in declared.values()} >= {"clean", "sft", "dpo", "inference"}


def test_the_workflow_posts_the_review_with_cml():
    workflow = YAML(typ="safe", pure=True).load((REPO / ".github/workflows/review.yml").read_text())
    steps = workflow["jobs"]["review"]["steps"]
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("iterative/setup-cml@") for u in uses)
    post = next(step for step in steps if "cml comment update" in step.get("run", ""))
    assert "--target=pr" in post["run"] and "--watermark-title=" in post["run"] and "review.md" in post["run"]
    assert post["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert workflow["permissions"]["pull-requests"] == "write"
    assert any("python -m ladder.tools.review" in step.get("run", "") for step in steps)
