"""metrics: rank every chat model on an Elo ladder from the judge's verdicts, and gather the headline
numbers of every stage into metrics/eval.json, the file a reviewer reads in `dvc metrics diff`.

Reads   data/generations/{responses,judgments}.parquet, metrics/{reward,sft,dpo,merge,quantize,judge}.json,
        params `metrics` (anchor, anchor_rating, bootstrap, seed).
Writes  metrics/eval.json (per model: Bradley-Terry Elo with a bootstrap 95% interval over prompts, win rate
        against the anchor, mean reward score, mean reply length; judge/reward-model agreement; the
        judge's position bias on these replies; the earlier stages' headline figures), plots/eval/elo.json (the ladder with intervals),
        plots/eval/win_rates.json (P(row model beats column model), averaged over prompts).

The Elo fit uses the judge's probabilities as soft outcomes: P(a beats b) = 1 / (1 + 10^((Rb - Ra) / 400)),
ratings fitted by maximum likelihood (Newton's method), the anchor model fixed at `anchor_rating`.

Usage:
    python -m stages.metrics
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import click

from ladder.io import rounded

log = logging.getLogger("ladder.metrics")
ELO_SCALE = 400 / math.log(10)  # natural-log units to Elo points
HEADLINES = {  # metrics file -> {name in eval.json: path of keys in that file}
    "reward": {"eval_accuracy": ("eval", "accuracy"), "eval_roc_auc": ("eval", "roc_auc")},
    "sft": {"eval_loss_base": ("eval_loss_base",), "eval_loss": ("eval_loss",)},
    "dpo": {"reward_accuracy": ("reward_accuracy",), "reward_margin": ("reward_margin",)},
    "merge": {"max_abs_logit_difference": ("max_abs_logit_difference",)},
    "judge": {"accuracy_tta": ("accuracy_tta",), "majority_baseline": ("majority_baseline",),
              "position_flip_rate": ("position_flip_rate",)},
}


def fit_elo(judgments: list[tuple[str, str, float]], models: list[str], anchor: str, anchor_rating: float = 1000.0,
            ridge: float = 1e-6) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo scale from (model_a, model_b, P(a beats b)) rows."""
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
    """Mean P(x beats y) over prompts, for every ordered pair of different models."""
    totals: dict[tuple[str, str], list[float]] = {}
    for _, a, b, p in judgments:
        totals.setdefault((a, b), []).append(p)
        totals.setdefault((b, a), []).append(1 - p)
    return {(x, y): sum(totals[(x, y)]) / len(totals[(x, y)]) for x in models for y in models if (x, y) in totals}


def agreement(judgments: list[tuple[str, str, str, float]], rewards: dict[tuple[str, str], float]) -> float | None:
    """How often the judge's pick (P(a) > 0.5) is the reply the reward model scores higher (equal scores skipped)."""
    votes = [(p > 0.5) == (rewards[(prompt, a)] > rewards[(prompt, b)])
             for prompt, a, b, p in judgments if rewards[(prompt, a)] != rewards[(prompt, b)] and p != 0.5]
    return sum(votes) / len(votes) if votes else None


def position_bias(judged) -> dict:
    """How the judge treated the order of the generated replies: mean P(the first reply wins) over both orders
    (0.5 is unbiased) and how often its pick flips when the order is swapped (TTA averages this away)."""
    first = ((judged["p_a_ab"] + 1 - judged["p_a_ba"]) / 2).mean()
    flips = ((judged["p_a_ab"] >= 0.5) != (judged["p_a_ba"] >= 0.5)).mean()
    return {"first_position_preference": rounded(float(first)), "flip_rate": rounded(float(flips))}


def headlines(folder: Path) -> dict:
    """The figures of earlier stages a reviewer wants beside the ladder (a missing file or key stops the stage)."""
    out = {}
    for stage, figures in HEADLINES.items():
        data = json.loads((folder / f"{stage}.json").read_text())
        for name, keys in figures.items():
            value = data
            for key in keys:
                if not isinstance(value, dict) or key not in value:
                    raise KeyError(f"{folder / f'{stage}.json'}: no {'.'.join(keys)}")
                value = value[key]
            out.setdefault(stage, {})[name] = value
    quantize = json.loads((folder / "quantize.json").read_text())["formats"]
    out["quantize"] = {name: {"kl_mean": f["kl_mean"], "top1_agreement": f["top1_agreement"],
                              "size_ratio_16bit": f["size_ratio_16bit"]} for name, f in quantize.items()}
    return out


@click.command(help=__doc__)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
def main(params_file: str) -> None:
    import polars as pl

    from ladder.io import write_json
    from ladder.params import section

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = section("metrics", params_file)
    responses = pl.read_parquet("data/generations/responses.parquet")
    judged = pl.read_parquet("data/generations/judgments.parquet")
    models = list(dict.fromkeys(responses["model"].to_list()))
    anchor = params["anchor"] if params["anchor"] in models else models[0]
    rows = [(r["prompt_id"], r["model_a"], r["model_b"], r["p_a"]) for r in judged.iter_rows(named=True)]
    ratings = fit_elo([(a, b, p) for _, a, b, p in rows], models, anchor, params["anchor_rating"])
    intervals = bootstrap_elo(rows, models, anchor, params["anchor_rating"], params["bootstrap"], params["seed"])
    wins = win_matrix(rows, models)
    rewards = {(r["prompt_id"], r["model"]): r["reward"] for r in responses.iter_rows(named=True)}
    per_model = {}
    for m in sorted(models, key=lambda m: -ratings[m]):
        mine = responses.filter(pl.col("model") == m)
        per_model[m] = {"elo": round(ratings[m], 1), "elo_95": [round(x, 1) for x in intervals[m]],
                        "win_rate_vs_anchor": rounded(wins.get((m, anchor))),
                        "mean_reward": rounded(mine["reward"].mean()),
                        "mean_reply_chars": rounded(float(mine["reply"].str.len_chars().mean())),
                        "empty_replies": int((mine["reply"].str.len_chars() == 0).sum())}
    report = {"anchor": anchor, "prompts": responses["prompt_id"].n_unique(), "judgments": len(rows),
              "models": per_model, "judge_reward_agreement": rounded(agreement(rows, rewards)),
              "judge_position_bias": position_bias(judged),
              "stages": headlines(Path("metrics"))}
    write_json(report, "metrics/eval.json")
    write_json([{"model": m, "elo": v["elo"], "low": v["elo_95"][0], "high": v["elo_95"][1]}
                for m, v in per_model.items()], "plots/eval/elo.json")
    write_json([{"model": x, "opponent": y, "win_rate": rounded(w)} for (x, y), w in sorted(wins.items())],
               "plots/eval/win_rates.json")
    log.info("ladder: %s", {m: v["elo"] for m, v in per_model.items()})


if __name__ == "__main__":
    main()
