"""The Elo ladder: ratings recovered from known strengths, intervals, win rates, ties against FastChat's fit; and the
reward and judge figures (scikit-learn) against the formulas they are defined by."""
from __future__ import annotations

import math

import pytest

from ladder.errors import InputError
from ladder.evaluation.elo import ELO_SCALE, bootstrap_elo, fit_elo, win_matrix
from ladder.evaluation.headlines import headlines
from ladder.evaluation.metrics import binary_metrics, calibration, evaluate_judge, log_loss, roc_auc
from ladder.evaluation.validity import agreement, judgment_rows, position_bias

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


# ------------------------------------------------------------------ ties, against FastChat's Bradley-Terry fit

def battles(prompts: int = 40, tie: float = 0.25, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """(prompt, model_a, model_b, winner) with hard outcomes: a tie with probability `tie`, else the winner drawn
    from the true ratings; both orders of every pair occur."""
    import numpy as np

    rng = np.random.default_rng(seed)
    models, out = list(TRUE), []
    for i in range(prompts):
        for a in models:
            for b in models:
                if a != b and rng.random() < 0.5:
                    winner = "tie" if rng.random() < tie else "model_a" if rng.random() < p_win(a, b) else "model_b"
                    out.append((f"p{i}", a, b, winner))
    return out


def as_judgments(rows: list[tuple[str, str, str, str]]):
    """The battles as a three-label judge's certain verdicts, in the columns inference writes."""
    import polars as pl

    one = {"model_a": (1.0, 0.0, 0.0), "model_b": (0.0, 1.0, 0.0), "tie": (0.0, 0.0, 1.0)}
    return pl.DataFrame([{"prompt_id": pr, "model_a": a, "model_b": b, "p_a": one[w][0], "p_b": one[w][1],
                          "p_tie": one[w][2]} for pr, a, b, w in rows])


def fastchat_design(rows: list[tuple[str, str, str, str]], models: list[str]):
    """FastChat's MLE Elo with ties (compute_elo_mle_with_tie in fastchat/serve/monitor/elo_analysis.py, January
    2024; compute_mle_elo in the Arena notebook, with the same counts as pivot-table weights): every battle twice; a win
    for a is Y=1 in both copies, for b Y=0 in both, a tie Y=1 in the first copy and Y=0 in the second (one win
    each way); features +ln 10 for model_a and -ln 10 for model_b, so a coefficient times 400 is an Elo rating."""
    import numpy as np

    index = {m: i for i, m in enumerate(models)}
    doubled = rows + rows
    X = np.zeros((len(doubled), len(models)))
    y = np.zeros(len(doubled))
    for k, (_, a, b, winner) in enumerate(doubled):
        X[k, index[a]], X[k, index[b]] = math.log(10), -math.log(10)
        y[k] = winner == "model_a" or (winner == "tie" and k < len(rows))
    return X, y


def logistic_lbfgs(X, y, weight=None):
    """Unpenalised logistic regression without intercept by torch's L-BFGS in float64: an optimiser that has
    nothing in common with the project's Newton steps."""
    import torch

    X, y = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    weight = torch.ones_like(y) if weight is None else torch.tensor(weight, dtype=torch.float64)
    coef = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([coef], lr=1, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = (weight * torch.nn.functional.binary_cross_entropy_with_logits(X @ coef, y, reduction="none")).sum()
        value.backward()
        return value

    opt.step(loss)
    return coef.detach().numpy()


def relative(ratings, models: list[str], anchor: str = "base") -> dict[str, float]:
    return {m: ratings[i] - ratings[models.index(anchor)] for i, m in enumerate(models)}


def test_ties_count_half_a_win_as_in_fastchats_fit():
    rows = battles()
    assert sum(w == "tie" for *_, w in rows) > 50  # the data really holds ties
    models = list(TRUE)
    ours = fit_elo([(a, b, p) for _, a, b, p in judgment_rows(as_judgments(rows))], models, "base", 0.0)
    X, y = fastchat_design(rows, models)
    reference = relative(400 * logistic_lbfgs(X, y), models)
    assert max(abs(ours[m] - reference[m]) for m in models) < 1e-4, (ours, reference)
    # Dropping the tie probability (the old fit on p_a alone) moves the ratings far from FastChat's.
    wrong = fit_elo([(a, b, 1.0 if w == "model_a" else 0.0) for _, a, b, w in rows], models, "base", 0.0)
    assert max(abs(wrong[m] - reference[m]) for m in models) > 10


def test_ties_dropped_match_fastchats_fit():
    rows = battles(tie=0.0, seed=1)
    models = list(TRUE)
    ours = fit_elo([(a, b, p) for _, a, b, p in judgment_rows(as_judgments(rows))], models, "base", 0.0)
    reference = relative(400 * logistic_lbfgs(*fastchat_design(rows, models)), models)
    assert max(abs(ours[m] - reference[m]) for m in models) < 1e-4, (ours, reference)


def test_soft_outcomes_with_ties_match_the_weighted_fastchat_fit():
    """A judge's probabilities in FastChat's weighted form (its later bt_loss_and_grad "naturally counts a draw as
    half a win"): each judgment is a win for a with weight P(a) + P(tie)/2 and a loss with weight P(b) + P(tie)/2."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(2)
    models = list(TRUE)
    rows = battles(seed=2)
    probs = rng.dirichlet([2.0, 2.0, 1.0], len(rows))
    judged = pl.DataFrame({"prompt_id": [r[0] for r in rows], "model_a": [r[1] for r in rows],
                           "model_b": [r[2] for r in rows], "p_a": probs[:, 0], "p_b": probs[:, 1],
                           "p_tie": probs[:, 2]})
    ours = fit_elo([(a, b, p) for _, a, b, p in judgment_rows(judged)], models, "base", 0.0)
    X, _ = fastchat_design([(pr, a, b, "model_a") for pr, a, b, _ in rows], models)
    half = len(rows)
    y = np.r_[np.ones(half), np.zeros(half)]
    weight = np.r_[probs[:, 0] + probs[:, 2] / 2, probs[:, 1] + probs[:, 2] / 2]
    reference = relative(400 * logistic_lbfgs(X, y, weight), models)
    assert max(abs(ours[m] - reference[m]) for m in models) < 1e-4, (ours, reference)


def test_ties_match_fastchats_own_solver():
    """The same comparison through scikit-learn's LogisticRegression, FastChat's own solver (unpenalised: its
    `penalty=None` is `C=inf` in scikit-learn 1.8 and later)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    import numpy as np

    rows, models = battles(), list(TRUE)
    ours = fit_elo([(a, b, p) for _, a, b, p in judgment_rows(as_judgments(rows))], models, "base", 0.0)
    X, y = fastchat_design(rows, models)
    lr = linear_model.LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000).fit(X, y)
    reference = relative(400 * lr.coef_[0], models)
    assert max(abs(ours[m] - reference[m]) for m in models) < 1e-4, (ours, reference)


def test_identical_models_tie_at_equal_ratings_and_half_wins():
    import polars as pl

    # Two copies of one model: the judge gives P(a) = P(b) = 0.4 and P(tie) = 0.2 in each order, every pair
    # listed in one order only (as inference lists them).
    judged = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(8)], "model_a": ["x"] * 8, "model_b": ["y"] * 8,
                           "p_a": [0.4] * 8, "p_b": [0.4] * 8, "p_tie": [0.2] * 8,
                           "p_a_ab": [0.4] * 8, "p_a_ba": [0.4] * 8, "p_tie_ab": [0.2] * 8, "p_tie_ba": [0.2] * 8})
    rows = judgment_rows(judged)
    fitted = fit_elo([(a, b, p) for _, a, b, p in rows], ["x", "y"], "y")
    assert abs(fitted["x"] - fitted["y"]) < 1e-6
    # P(a) alone put them 70 Elo apart: 400 log10(0.4 / 0.6).
    assert abs(fit_elo([("x", "y", 0.4)] * 8, ["x", "y"], "y")["x"] - 1000 - ELO_SCALE * math.log(0.4 / 0.6)) < 1e-3
    wins = win_matrix(rows, ["x", "y"])
    assert wins[("x", "y")] == pytest.approx(0.5) and wins[("y", "x")] == pytest.approx(0.5)
    assert position_bias(judged) == {"first_position_preference": 0.5, "flip_rate": 0.0}


def test_win_matrix_agreement_and_position_bias_count_a_tie_as_half():
    import polars as pl

    judged = pl.DataFrame({"prompt_id": ["p0", "p1"], "model_a": ["x", "x"], "model_b": ["y", "y"],
                           "p_a": [0.3, 0.1], "p_b": [0.1, 0.6], "p_tie": [0.6, 0.3],
                           "p_a_ab": [0.3, 0.1], "p_a_ba": [0.1, 0.1], "p_tie_ab": [0.6, 0.3], "p_tie_ba": [0.2, 0.3]})
    rows = judgment_rows(judged)
    assert [p for *_, p in rows] == pytest.approx([0.6, 0.25])
    assert win_matrix(rows, ["x", "y"])[("x", "y")] == pytest.approx((0.6 + 0.25) / 2)
    # p0: x's pick by P(a) alone (0.3) would be y; with the tie as half a win it is x.
    assert agreement(rows[:1], {("p0", "x"): 1.0, ("p0", "y"): 0.0}) == 1.0
    # Soft outcome per order: p0 0.6 and 0.2, p1 0.25 and 0.25; the first reply's share is (ab + 1 - ba) / 2.
    bias = position_bias(judged)
    assert bias["first_position_preference"] == pytest.approx(((0.6 + 0.8) / 2 + (0.25 + 0.75) / 2) / 2)
    assert bias["flip_rate"] == 0.5  # p0 flips (tie, then y: 0.7), p1 does not (y both times)


def test_a_three_label_judgment_without_per_order_ties_is_refused():
    import polars as pl

    judged = pl.DataFrame({"p_a": [0.4], "p_b": [0.4], "p_tie": [0.2], "p_a_ab": [0.4], "p_a_ba": [0.4]})
    with pytest.raises(ValueError, match="p_tie_ab"):
        position_bias(judged)
    two_labels = judged.with_columns(pl.lit(None, dtype=pl.Float64).alias("p_tie"))
    assert position_bias(two_labels)["first_position_preference"] == 0.5


def test_headlines_name_a_missing_figure(tmp_path):
    for stage in ("reward", "sft", "dpo", "merge", "judge"):
        (tmp_path / f"{stage}.json").write_text("{}")
    with pytest.raises(InputError, match="reward.json"):
        headlines(tmp_path)


# ------------------------------------------------------------------------------------------------ reward and judge

def direct_binary(scores, labels):
    """The figures from their definitions, counted by hand (ROC AUC as Mann-Whitney's U, ties half)."""
    truth, pred = [y >= 0.5 for y in labels], [s >= 0.5 for s in scores]
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    auc = (sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))) if pos and neg else None
    return {"accuracy": sum(p == t for p, t in zip(pred, truth)) / len(labels), "precision": precision,
            "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "roc_auc": auc, "mse": sum((s - y) ** 2 for s, y in zip(scores, labels)) / len(labels)}


@pytest.mark.parametrize("seed", range(6))
def test_reward_figures_match_their_definitions_with_ties_in_the_scores(seed):
    import random

    rng = random.Random(seed)
    n = [2, 7, 40, 233, 233, 90][seed]
    scores = [round(rng.random() * 8) / 8 for _ in range(n)]  # an eighth-grid: many tied scores, some at 0.5
    labels = [float(rng.random() < 0.5) for _ in range(n)] if seed % 3 else [rng.random() for _ in range(n)]
    labels[0], labels[-1] = 1.0, 0.0  # both classes
    got = binary_metrics(scores, labels, majority=1)
    for key, value in direct_binary(scores, labels).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_reward_figures_with_one_class_only():
    got = binary_metrics([0.2, 0.7, 0.7], [1.0, 1.0, 1.0], majority=0)
    assert got["roc_auc"] is None and roc_auc([0.3, 0.4], [False, False]) is None
    assert got["recall"] == pytest.approx(2 / 3) and got["precision"] == 1.0 and got["majority_baseline"] == 0.0
    none_predicted = binary_metrics([0.1, 0.2], [0.0, 0.0], majority=0)
    assert none_predicted["precision"] == none_predicted["recall"] == none_predicted["f1"] == 0.0
    assert none_predicted["accuracy"] == 1.0


def test_log_loss_is_the_mean_negative_log_probability_of_the_truth():
    probabilities = [[0.7, 0.2, 0.1], [0.25, 0.5, 0.25], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]]
    truth = [0, 2, 2, 1]
    expected = -sum(math.log(p[t]) for p, t in zip(probabilities, truth)) / len(truth)
    assert log_loss(probabilities, truth) == pytest.approx(expected, abs=1e-12)
    assert log_loss([[0.9, 0.1]], [0]) == pytest.approx(-math.log(0.9), abs=1e-12)  # truth of one class only
    # a float32 softmax sums to 1 only to float32 precision: no warning for that
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isfinite(log_loss([[0.6000001, 0.4]], [1]))


def test_calibration_bins_are_closed_on_the_right_and_count_their_rows():
    rows = calibration([0.05, 0.1, 0.15, 0.42, 0.44, 0.97, 1.0], [True, False, False, True, False, True, True])
    assert [r["rows"] for r in rows] == [2, 1, 2, 2]  # 0.1 sits in the first bin, 1.0 in the last
    assert [round(r["bin"], 6) for r in rows] == [0.05, 0.15, 0.45, 0.95]
    assert rows[0]["predicted"] == pytest.approx(0.075) and rows[0]["observed"] == 0.5
    assert rows[2]["predicted"] == pytest.approx(0.43) and rows[3]["observed"] == 1.0


def test_judge_evaluation_counts_accuracy_position_and_plots():
    scored = {"x": {"p_a": 0.8, "p_b": 0.2, "p_a_ab": 0.9, "p_a_ba": 0.7},   # right, both orders agree
              "y": {"p_a": 0.6, "p_b": 0.4, "p_a_ab": 0.7, "p_a_ba": 0.4},   # wrong, flips with the order
              "z": {"p_a": 0.3, "p_b": 0.7, "p_a_ab": 0.35, "p_a_ba": 0.25}}  # right
    rows = [{"id": "x", "winner": "model_a", "language": "en"}, {"id": "y", "winner": "model_b", "language": "en"},
            {"id": "z", "winner": "model_b", "language": "fr", "table": "preferences"}]
    metrics, plots = evaluate_judge(scored, rows, ["model_a", "model_b"], "model_b")
    assert metrics["accuracy_tta"] == pytest.approx(2 / 3) and metrics["position_flip_rate"] == pytest.approx(1 / 3)
    assert metrics["log_loss_tta"] == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.7)) / 3)
    assert metrics["accuracy_by_language"] == {"en": 0.5} and set(metrics["by_source"]) == {"arena", "preferences"}
    assert metrics["majority_baseline"] == pytest.approx(2 / 3)
    assert [r["rows"] for r in plots["calibration"]] == [1, 1, 1]
    assert plots["confusion"][1] == {"actual": "model_b", "predicted": "model_a"}
