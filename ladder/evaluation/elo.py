"""The Elo ladder's arithmetic: Bradley-Terry ratings on the Elo scale from soft pairwise outcomes, their bootstrap
intervals, the win-rate matrix, and the length-controlled rating (a length covariate fitted jointly with the
ratings, as Chatbot Arena's style control does). A tie counts half a win (FastChat's convention).

Written here rather than taken from FastChat (whose fit is scikit-learn's logistic regression over duplicated
battle rows) because the judge's outcomes are probabilities, not win/loss/tie labels; tests/test_metrics.py checks
this fit against FastChat's method on hard outcomes, tests/test_validity.py the length-controlled one against
FastChat's contextual Bradley-Terry (rating_systems.py) on the same kind of data.
"""
from __future__ import annotations

import math

ELO_SCALE = 400 / math.log(10)  # natural-log units to Elo points


def soft_outcome(p_a: float, p_tie: float | None) -> float:
    """a's share of the point: a win is 1, a tie half (FastChat's convention), so a judge that calls two equal
    replies a tie rates their models equal; P(a) alone would read every tie as a loss for a."""
    return p_a + (p_tie or 0.0) / 2


def _newton(design, p, keep, ridge: float):
    """Maximum-likelihood coefficients of P(a beats b) = sigmoid(design @ coef) for soft outcomes `p`, over the
    columns `keep` (the others stay 0), with a small ridge so that a model that always wins stays finite."""
    import numpy as np

    coef = np.zeros(design.shape[1])
    x = design[:, keep]
    for _ in range(100):
        q = 1 / (1 + np.exp(-(design @ coef)))
        grad = x.T @ (p - q) - ridge * coef[keep]
        hess = (x * (q * (1 - q))[:, None]).T @ x + ridge * np.eye(len(keep))
        step = np.linalg.solve(hess, grad)
        coef[keep] += step
        if np.abs(step).max() < 1e-10:
            break
    return coef


def _design(judgments: list[tuple[str, str, float]], models: list[str], features=None):
    """One row per judgment: +1 in model_a's column, -1 in model_b's, then the covariates."""
    import numpy as np

    index = {m: i for i, m in enumerate(models)}
    extra = 0 if features is None else np.asarray(features, dtype=float).reshape(len(judgments), -1).shape[1]
    design = np.zeros((len(judgments), len(models) + extra))
    rows = np.arange(len(judgments))
    design[rows, [index[a] for a, _, _ in judgments]] += 1.0
    design[rows, [index[b] for _, b, _ in judgments]] -= 1.0
    if extra:
        design[:, len(models):] = np.asarray(features, dtype=float).reshape(len(judgments), -1)
    return design, np.array([w for _, _, w in judgments], dtype=float)


def fit_elo(judgments: list[tuple[str, str, float]], models: list[str], anchor: str, anchor_rating: float = 1000.0,
            ridge: float = 1e-6) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo scale from (model_a, model_b, a's soft outcome in 0..1) rows."""
    return fit_elo_controlled(judgments, None, models, anchor, anchor_rating, ridge)[0]


def fit_elo_controlled(judgments: list[tuple[str, str, float]], features, models: list[str], anchor: str,
                       anchor_rating: float = 1000.0, ridge: float = 1e-6) -> tuple[dict[str, float], list[float]]:
    """Bradley-Terry ratings fitted jointly with covariate coefficients (Chatbot Arena's style control:
    logit P(a beats b) = theta_a - theta_b + features @ beta), so a model is not credited for what the covariates
    explain. `features`: one row of covariates per judgment, or None for the plain fit. Returns the ratings and beta
    (log-odds per unit of each covariate)."""
    import numpy as np

    k = 0 if features is None else np.asarray(features, dtype=float).reshape(len(judgments), -1).shape[1]
    free = [i for i, m in enumerate(models) if m != anchor]
    if not judgments or (not free and not k):
        return {m: anchor_rating for m in models}, [0.0] * k
    design, p = _design(judgments, models, features)
    coef = _newton(design, p, free + list(range(len(models), len(models) + k)), ridge)
    ratings = {m: float(anchor_rating + ELO_SCALE * coef[i]) for i, m in enumerate(models)}
    return ratings, [float(c) for c in coef[len(models):]]


def length_feature(len_a, len_b):
    """Chatbot Arena's length covariate: (len_a - len_b) / (len_a + len_b + 1) per judgment, standardised over the
    judgments (mean 0, standard deviation 1); a constant column stays at 0 rather than dividing by zero."""
    import numpy as np

    ratio = (np.asarray(len_a, dtype=float) - np.asarray(len_b, dtype=float)) / (
        np.asarray(len_a, dtype=float) + np.asarray(len_b, dtype=float) + 1)
    std = ratio.std()
    return (ratio - ratio.mean()) / (std if std > 0 else 1.0)


def bootstrap_elo(judgments: list[tuple[str, str, str, float]], models: list[str], anchor: str, anchor_rating: float,
                  rounds: int, seed: int, features=None) -> dict[str, tuple[float, float]]:
    """2.5% and 97.5% points of each rating over `rounds` resamplings of the prompts (with replacement); with
    `features` (one row per judgment) the ratings are the covariate-controlled ones, on the same resamplings."""
    import numpy as np

    by_prompt: dict[str, list] = {}
    extra = ([None] * len(judgments) if features is None
             else list(np.asarray(features, dtype=float).reshape(len(judgments), -1)))
    for (prompt, a, b, p), x in zip(judgments, extra):
        by_prompt.setdefault(prompt, []).append(((a, b, p), x))
    prompts = sorted(by_prompt)
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in models}
    for _ in range(rounds):
        chosen = [j for i in rng.integers(0, len(prompts), len(prompts)) for j in by_prompt[prompts[i]]]
        rows = [j for j, _ in chosen]
        fitted = fit_elo_controlled(rows, None if features is None else np.array([x for _, x in chosen]), models,
                                    anchor, anchor_rating)[0]
        for m in models:
            samples[m].append(fitted[m])
    return {m: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for m, v in samples.items()}


def win_matrix(judgments: list[tuple[str, str, str, float]], models: list[str]) -> dict[tuple[str, str], float]:
    """Mean soft outcome of x against y over prompts (a tie is half a win), for every ordered pair of models."""
    totals: dict[tuple[str, str], list[float]] = {}
    for _, a, b, p in judgments:
        totals.setdefault((a, b), []).append(p)
        totals.setdefault((b, a), []).append(1 - p)
    return {(x, y): sum(totals[(x, y)]) / len(totals[(x, y)]) for x in models for y in models if (x, y) in totals}
