"""The Elo ladder and the review of a change: ratings recovered from known strengths, intervals, win rates."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages.metrics import agreement, bootstrap_elo, fit_elo, headlines, position_bias, win_matrix

TRUE = {"base": 1000.0, "sft": 1100.0, "merged": 1150.0, "int8": 1140.0, "gguf-q8_0": 900.0}


def p_win(a: str, b: str) -> float:
    return 1 / (1 + 10 ** ((TRUE[b] - TRUE[a]) / 400))


def judgments(prompts: int = 6) -> list[tuple[str, str, str, float]]:
    models = list(TRUE)
    return [(f"p{i}", a, b, p_win(a, b)) for i in range(prompts) for j, a in enumerate(models) for b in models[j + 1:]]


def test_fit_recovers_known_ratings_with_the_anchor_fixed():
    rows = [(a, b, p) for _, a, b, p in judgments()]
    fitted = fit_elo(rows, list(TRUE), "base")
    assert all(abs(fitted[m] - TRUE[m]) < 1e-3 for m in TRUE), fitted
    shifted = fit_elo(rows, list(TRUE), "sft", anchor_rating=1500)
    assert abs(shifted["sft"] - 1500) < 1e-9 and abs(shifted["merged"] - 1550) < 1e-3
    swapped = fit_elo([(b, a, 1 - p) for a, b, p in rows], list(TRUE), "base")  # the order of a pair is irrelevant
    assert all(abs(swapped[m] - fitted[m]) < 1e-6 for m in TRUE)


def test_fit_stays_finite_when_one_model_always_wins():
    fitted = fit_elo([("a", "b", 1.0)] * 5, ["a", "b"], "b")
    assert math.isfinite(fitted["a"]) and fitted["a"] > 2000


def test_bootstrap_interval_brackets_the_fit_and_narrows_with_more_prompts():
    import random

    rng = random.Random(0)
    noisy = [(pr, a, b, min(max(p + rng.uniform(-0.3, 0.3), 0.01), 0.99)) for pr, a, b, p in judgments(40)]
    fitted = fit_elo([(a, b, p) for _, a, b, p in noisy], list(TRUE), "base")
    wide = bootstrap_elo(noisy[:40], list(TRUE), "base", 1000, 100, seed=0)
    narrow = bootstrap_elo(noisy, list(TRUE), "base", 1000, 100, seed=0)
    assert narrow == bootstrap_elo(noisy, list(TRUE), "base", 1000, 100, seed=0)  # seeded
    for m in TRUE:
        low, high = narrow[m]
        assert low <= fitted[m] + 1e-6 and fitted[m] - 1e-6 <= high
    width = {name: sum(high - low for low, high in d.values()) for name, d in (("wide", wide), ("narrow", narrow))}
    assert width["narrow"] < 0.7 * width["wide"]  # 40 prompts against 4
    assert narrow["base"] == (1000.0, 1000.0)


def test_win_matrix_and_agreement():
    rows = judgments(2)
    wins = win_matrix(rows, list(TRUE))
    assert abs(wins[("sft", "base")] + wins[("base", "sft")] - 1) < 1e-12
    assert abs(wins[("merged", "base")] - p_win("merged", "base")) < 1e-12
    rewards = {(pr, m): TRUE[m] for pr in ("p0", "p1") for m in TRUE}
    assert agreement(rows, rewards) == 1.0
    assert agreement(rows, {k: -v for k, v in rewards.items()}) == 0.0


def test_position_bias_of_a_judge_that_always_picks_the_first_reply():
    import polars as pl

    always_first = pl.DataFrame({"p_a_ab": [0.9, 0.8], "p_a_ba": [0.1, 0.2]})
    assert position_bias(always_first) == {"first_position_preference": 0.85, "flip_rate": 1.0}
    fair = pl.DataFrame({"p_a_ab": [0.9, 0.3], "p_a_ba": [0.8, 0.2]})
    assert position_bias(fair) == {"first_position_preference": 0.55, "flip_rate": 0.0}


def test_headlines_name_a_missing_figure(tmp_path):
    for stage in ("reward", "sft", "dpo", "merge", "judge"):
        (tmp_path / f"{stage}.json").write_text("{}")
    with pytest.raises(KeyError, match="reward.json"):
        headlines(tmp_path)


def test_review_prints_params_and_metrics_diff_as_markdown(tmp_path, monkeypatch):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*cmd):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: echo\n    params: [train]\n"
                                       "    metrics:\n      - metrics/eval.json:\n          cache: false\n"
                                       "      - metrics/timings/train.json:\n          cache: false\n")
    (tmp_path / "metrics/timings").mkdir(parents=True)

    def commit(lr: float, elo: float, seconds: float):
        (tmp_path / "params.yaml").write_text(f"train:\n  lr: {lr}\n  steps: 10\n")
        (tmp_path / "metrics/eval.json").write_text(json.dumps({"models": {"sft": {"elo": elo}}, "prompts": 16}))
        (tmp_path / "metrics/timings/train.json").write_text(json.dumps({"seconds": seconds}))
        run("git", "add", "-A")
        run("git", "commit", "-qm", "x")

    commit(1e-4, 1010.0, 5.0)
    commit(3e-5, 1042.5, 7.0)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.chdir(tmp_path)
    from ladder.review import MARKER, review

    text = review("HEAD~1")
    assert text.startswith(MARKER)
    assert "| params.yaml | train.lr | 0.0001 | 3e-05 |" in text
    assert "| metrics/eval.json | models.sft.elo | 1010 | 1042.5 | 32.5 |" in text
    assert "timings" not in text and "train.steps" not in text and "prompts" not in text
    assert "train.steps" in review("HEAD~1", show_all=True)
