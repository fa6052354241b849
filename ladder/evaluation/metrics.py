"""The figures the stages report about their models: the reward model's binary classification figures, the judge's
eval figures (overall, per table, calibration and confusion rows for the plots).

scikit-learn computes what it has (precision, recall, F1, ROC AUC, log loss, the calibration curve); the rest is the
ladder's own bookkeeping around it. tests/test_metrics.py checks these against the hand-written formulas they
replaced, ties in the scores and a single class included.
"""
from __future__ import annotations

import warnings

from ladder.evaluation.validity import order_figures, score_orders

CALIBRATION_BINS = 10


# ------------------------------------------------------------------------------------------------ reward model

def binary_metrics(scores: list[float], labels: list[float], majority: int) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = thumbs up, threshold 0.5), ROC AUC, MSE, and the
    accuracy of always answering the train split's majority class."""
    n = len(labels)
    if not n:
        return {"rows": 0}
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, precision_score, recall_score

    truth = [y >= 0.5 for y in labels]
    pred = [s >= 0.5 for s in scores]
    return {"rows": n, "accuracy": float(accuracy_score(truth, pred)),
            "precision": float(precision_score(truth, pred, zero_division=0.0)),
            "recall": float(recall_score(truth, pred, zero_division=0.0)),
            "f1": float(f1_score(truth, pred, zero_division=0.0)),
            "roc_auc": roc_auc(scores, truth), "mse": float(mean_squared_error(labels, scores)),
            "majority_baseline": sum(t == bool(majority) for t in truth) / n, "positive_rate": sum(truth) / n}


def roc_auc(scores: list[float], truth: list[bool]) -> float | None:
    """The probability that a random positive outscores a random negative (ties count half); None with one class
    only, where it is undefined (scikit-learn would warn and answer nan, which JSON cannot hold)."""
    if all(truth) or not any(truth):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores))


# ------------------------------------------------------------------------------------------------ judge

def log_loss(probabilities: list[list[float]], truth: list[int]) -> float:
    """Mean negative log-probability of the true label. The judge's probabilities are a float32 softmax, whose rows
    sum to 1 only to float32 precision; scikit-learn warns about that at float64's, so that one warning is muted."""
    from sklearn.metrics import log_loss as sklearn_log_loss

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
        return float(sklearn_log_loss(truth, probabilities, labels=list(range(len(probabilities[0])))))


def tta_probabilities(score: dict, labels: list[str]) -> list[float]:
    return [score["p_a"], score["p_b"], score.get("p_tie")][:len(labels)]


def predicted_label(score: dict, labels: list[str]) -> int:
    probabilities = tta_probabilities(score, labels)
    return max(range(len(labels)), key=probabilities.__getitem__)


def judge_figures(scored: dict[str, dict], rows: list[dict], labels: list[str], majority: str) -> dict:
    """Accuracy, log loss and position figures of `rows` (with TTA and, for two labels, one order alone)."""
    truth = [labels.index(r["winner"]) for r in rows]
    tta = [tta_probabilities(scored[r["id"]], labels) for r in rows]
    predicted = [predicted_label(scored[r["id"]], labels) for r in rows]
    one = [scored[r["id"]]["p_a_ab"] for r in rows]
    first_share, flip_rate = order_figures(*score_orders([scored[r["id"]] for r in rows]))
    n = len(rows)
    out = {"rows": n,
           "accuracy_tta": sum(p == t for p, t in zip(predicted, truth)) / n,
           "log_loss_tta": log_loss(tta, truth),
           "majority_baseline": sum(t == labels.index(majority) for t in truth) / n,
           "position_flip_rate": flip_rate,
           "first_position_preference": first_share}
    if len(labels) == 2:  # one order only is defined as a two-way choice
        out["accuracy_one_order"] = sum((p >= 0.5) == (t == 0) for p, t in zip(one, truth)) / n
        out["log_loss_one_order"] = log_loss([[p, 1 - p] for p in one], truth)
    return out


def calibration(p_a: list[float], a_won: list[bool], bins: int = CALIBRATION_BINS) -> list[dict]:
    """Plot rows of P(a wins) against how often a won, per non-empty bin of equal width: its centre, the mean
    prediction, the observed rate and its row count. Bins are scikit-learn's calibration_curve's (closed on the
    right: 0.1 falls in the first)."""
    import numpy as np
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(a_won, p_a, n_bins=bins, strategy="uniform", pos_label=True)
    counts = np.bincount(np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p_a), minlength=bins)
    filled = [b for b in range(bins) if counts[b]]
    return [{"bin": b / bins + 0.5 / bins, "predicted": float(p), "observed": float(o), "rows": int(counts[b])}
            for b, p, o in zip(filled, predicted, observed)]


def evaluate_judge(scored: dict[str, dict], rows: list[dict], labels: list[str], majority: str) -> tuple[dict, dict]:
    """metrics/judge.json figures, overall and per table (`by_source`: a row's `table`, arena when it has
    none), and the plot rows (calibration of P(a wins), confusion matrix: one row per prediction, as DVC's confusion
    template counts them itself)."""
    overall = judge_figures(scored, rows, labels, majority)
    n = overall.pop("rows")
    tables: dict[str, list[dict]] = {}
    for r in rows:
        tables.setdefault(r.get("table", "arena"), []).append(r)
    truth = [labels.index(r["winner"]) for r in rows]
    predicted = [predicted_label(scored[r["id"]], labels) for r in rows]
    languages: dict[str, list[bool]] = {}
    for r, p, t in zip(rows, predicted, truth):
        if r.get("table", "arena") == "arena":  # the preferences table records no language
            languages.setdefault(r["language"], []).append(p == t)
    metrics = {"eval_rows": n, "labels": labels, **overall,
               "accuracy_by_language": {k: round(sum(v) / len(v), 6) for k, v in sorted(languages.items())},
               "by_source": {t: judge_figures(scored, v, labels, majority) for t, v in sorted(tables.items())}}
    curve = calibration([scored[r["id"]]["p_a"] for r in rows], [t == 0 for t in truth])
    confusion = [{"actual": labels[t], "predicted": labels[p]} for t, p in zip(truth, predicted)]
    return metrics, {"calibration": curve, "confusion": confusion}

