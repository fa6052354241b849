"""The Elo ladder's arithmetic: Bradley-Terry ratings on the Elo scale from soft pairwise outcomes, their bootstrap
intervals, and the win-rate matrix. A tie counts half a win (FastChat's convention).

Written here rather than taken from FastChat (whose fit is scikit-learn's logistic regression over duplicated
battle rows) because the judge's outcomes are probabilities, not win/loss/tie labels; tests/test_metrics.py checks
this fit against FastChat's method on hard outcomes.
"""
from __future__ import annotations

import math

ELO_SCALE = 400 / math.log(10)  # natural-log units to Elo points


def soft_outcome(p_a: float, p_tie: float | None) -> float:
    """a's share of the point: a win is 1, a tie half (FastChat's convention), so a judge that calls two equal
    replies a tie rates their models equal; P(a) alone would read every tie as a loss for a."""
    return p_a + (p_tie or 0.0) / 2


def fit_elo(judgments: list[tuple[str, str, float]], models: list[str], anchor: str, anchor_rating: float = 1000.0,
            ridge: float = 1e-6) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo scale from (model_a, model_b, a's soft outcome in 0..1) rows."""
    import numpy as np

    index = {m: i for i, m in enumerate(models)}
    free = [m for m in models if m != anchor]
    theta = np.zeros(len(models))
    if not free or not judgments:
        return {m: anchor_rating for m in models}
    a = np.array([index[x] for x, _, _ in judgments])
    b = np.array([index[y] for _, y, _ in judgments])
    p = np.array([w for _, _, w in judgments], dtype=float)
    keep = np.array([index[m] for m in free])
    for _ in range(100):
        q = 1 / (1 + np.exp(-(theta[a] - theta[b])))
        grad = np.zeros(len(models))
        np.add.at(grad, a, p - q)
        np.add.at(grad, b, q - p)
        weight = q * (1 - q)
        hess = np.zeros((len(models), len(models)))
        np.add.at(hess, (a, a), weight)
        np.add.at(hess, (b, b), weight)
        np.add.at(hess, (a, b), -weight)
        np.add.at(hess, (b, a), -weight)
        step = np.linalg.solve(hess[np.ix_(keep, keep)] + ridge * np.eye(len(keep)), grad[keep] - ridge * theta[keep])
        theta[keep] += step
        if np.abs(step).max() < 1e-10:
            break
    return {m: float(anchor_rating + ELO_SCALE * theta[index[m]]) for m in models}


def bootstrap_elo(judgments: list[tuple[str, str, str, float]], models: list[str], anchor: str, anchor_rating: float,
                  rounds: int, seed: int) -> dict[str, tuple[float, float]]:
    """2.5% and 97.5% points of each rating over `rounds` resamplings of the prompts (with replacement)."""
    import numpy as np

    by_prompt: dict[str, list] = {}
    for prompt, a, b, p in judgments:
        by_prompt.setdefault(prompt, []).append((a, b, p))
    prompts = sorted(by_prompt)
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in models}
    for _ in range(rounds):
        chosen = rng.integers(0, len(prompts), len(prompts))
        fitted = fit_elo([j for i in chosen for j in by_prompt[prompts[i]]], models, anchor, anchor_rating)
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
