"""metrics: rank every chat model on an Elo ladder from the judge's verdicts, and gather the headline
numbers of every stage into metrics/eval.json, the file a reviewer reads in `dvc metrics diff`.

Reads   data/generations/{responses,judgments}.parquet, metrics/{reward,sft,dpo,merge,quantize,judge}.json,
        params `metrics` (anchor, anchor_rating, bootstrap, seed).
Writes  metrics/eval.json (per model: Bradley-Terry Elo with a bootstrap 95% interval over prompts, win rate
        against the anchor, mean reward score, mean reply length; judge/reward-model agreement; the
        judge's position bias on these replies; the earlier stages' headline figures), plots/eval/elo.json (the ladder with intervals),
        plots/eval/win_rates.json (P(row model beats column model), averaged over prompts).

The Elo fit uses the judge's probabilities as soft outcomes: P(a beats b) = 1 / (1 + 10^((Rb - Ra) / 400)),
ratings fitted by maximum likelihood (Newton's method), the anchor model fixed at `anchor_rating`. A tie counts
half a win (FastChat's convention): with a three-label judge a's outcome is P(a) + P(tie) / 2, in the fit, the
win matrix, the judge/reward agreement and the position-bias figures alike.

Usage:
    python -m stages.metrics
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from ladder.elo import bootstrap_elo, fit_elo, soft_outcome, win_matrix
from ladder.io import rounded

log = logging.getLogger("ladder.metrics")
HEADLINES = {  # metrics file -> {name in eval.json: path of keys in that file}
    "reward": {"eval_accuracy": ("eval", "accuracy"), "eval_roc_auc": ("eval", "roc_auc")},
    "sft": {"eval_loss_base": ("eval_loss_base",), "eval_loss": ("eval_loss",)},
    "dpo": {"reward_accuracy": ("reward_accuracy",), "reward_margin": ("reward_margin",)},
    "merge": {"max_abs_logit_difference": ("max_abs_logit_difference",)},
    "judge": {"accuracy_tta": ("accuracy_tta",), "majority_baseline": ("majority_baseline",),
              "position_flip_rate": ("position_flip_rate",)},
}


def judgment_rows(judged) -> list[tuple[str, str, str, float]]:
    """(prompt, model_a, model_b, a's soft outcome) per judgment; p_tie is null for a two-label judge."""
    tie = judged["p_tie"] if "p_tie" in judged.columns else [None] * judged.height
    return [(prompt, a, b, soft_outcome(p, t)) for prompt, a, b, p, t in
            zip(judged["prompt_id"], judged["model_a"], judged["model_b"], judged["p_a"], tie)]


def agreement(judgments: list[tuple[str, str, str, float]], rewards: dict[tuple[str, str], float]) -> float | None:
    """How often the judge's pick (a's soft outcome above 0.5) is the reply the reward model scores higher (equal
    scores, and judgments of exactly 0.5, skipped)."""
    votes = [(p > 0.5) == (rewards[(prompt, a)] > rewards[(prompt, b)])
             for prompt, a, b, p in judgments if rewards[(prompt, a)] != rewards[(prompt, b)] and p != 0.5]
    return sum(votes) / len(votes) if votes else None


def order_outcomes(judged):
    """a's soft outcome in each order alone: (a, b) and (b, a). A three-label judge's tie probabilities per order
    (p_tie_ab, p_tie_ba) must be there, or the figures would read every tie as a loss for a."""
    ab, ba = judged["p_a_ab"], judged["p_a_ba"]
    if "p_tie" in judged.columns and judged["p_tie"].is_not_null().any():
        for column in ("p_tie_ab", "p_tie_ba"):
            if column not in judged.columns:
                raise ValueError(f"judgments: column {column!r} is missing: a three-label judge (p_tie set) needs "
                                 "the tie probability of each order for the position-bias figures")
        ab, ba = ab + judged["p_tie_ab"].fill_null(0.0) / 2, ba + judged["p_tie_ba"].fill_null(0.0) / 2
    return ab, ba


def position_bias(judged) -> dict:
    """How the judge treated the order of the generated replies: the first reply's mean soft outcome over both
    orders (0.5 is unbiased; a tie is half a win) and how often its pick flips when the order is swapped (TTA
    averages this away)."""
    ab, ba = order_outcomes(judged)
    first = ((ab + 1 - ba) / 2).mean()
    flips = ((ab >= 0.5) != (ba >= 0.5)).mean()
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
    rows = judgment_rows(judged)
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
    try:
        bias = position_bias(judged)
    except ValueError as error:  # a three-label judge's judgments without each order's tie probability
        raise click.ClickException(f"data/generations/judgments.parquet: {error}") from None
    report = {"anchor": anchor, "prompts": responses["prompt_id"].n_unique(), "judgments": len(rows),
              "models": per_model, "judge_reward_agreement": rounded(agreement(rows, rewards)),
              "judge_position_bias": bias,
              "stages": headlines(Path("metrics"))}
    write_json(report, "metrics/eval.json")
    write_json([{"model": m, "elo": v["elo"], "low": v["elo_95"][0], "high": v["elo_95"][1]}
                for m, v in per_model.items()], "plots/eval/elo.json")
    write_json([{"model": x, "opponent": y, "win_rate": rounded(w)} for (x, y), w in sorted(wins.items())],
               "plots/eval/win_rates.json")
    log.info("ladder: %s", {m: v["elo"] for m, v in per_model.items()})


if __name__ == "__main__":
    main()
