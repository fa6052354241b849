"""metrics: rank every chat model and control on an Elo ladder from the judge's verdicts, say whether the ladder
can be trusted, and gather the headline numbers of every stage into metrics/headlines.json, the figures
`dvc metrics diff` and `dvc exp show` compare.

Reads   data/generations/{prompts,responses,judgments,identical}.parquet,
        metrics/{score,reward,sft,dpo,merge,quantize,judge}.json (dpo's figures as its method declares them in
        ladder/training/preference.py), params `metrics` (anchor, anchor_rating, bootstrap, seed,
        validity thresholds).
Writes  metrics/eval.json: first `validity` (the verdict, its reasons and every check of
        ladder/evaluation/validity.py with its threshold), then per model and control: Bradley-Terry Elo with a
        bootstrap 95% interval over prompts, the length-controlled Elo beside it, win rate against the anchor,
        mean reward score, mean reply length; the earlier stages' headline figures. plots/eval/elo.json (the ladder with intervals),
        plots/eval/win_rates.json (P(row model beats column model), averaged over prompts),
        reports/examples.json (three prompts chosen by the seed, with the replies of the anchor, of the best
        generated model and the reference, for the review), metrics/headlines.json (the verdict, each check's
        value, every rating, the score counts and the stages' headline figures: ladder/evaluation/headlines.py).

The Elo fit uses the judge's probabilities as soft outcomes: P(a beats b) = 1 / (1 + 10^((Rb - Ra) / 400)),
ratings fitted by maximum likelihood (Newton's method), the anchor model fixed at `anchor_rating`. A tie counts
half a win (FastChat's convention): with a three-label judge a's outcome is P(a) + P(tie) / 2, in the fit, the
win matrix, the judge/reward agreement and the position-bias figures alike. The length-controlled rating fits a
length covariate jointly with the ratings, as Chatbot Arena's style control does: (len_a - len_b) / (len_a + len_b
+ 1) in characters, standardised over the judgments. An invalid ladder still writes every rating.

Usage:
    python -m stages.metrics
"""
from __future__ import annotations

import json
import logging

from ladder import paths
from ladder.errors import InputError
from ladder.evaluation.elo import bootstrap_elo, fit_elo, fit_elo_controlled, length_feature, win_matrix
from ladder.evaluation.examples import best_generated, review_examples
from ladder.evaluation.headlines import headlines, summary
from ladder.evaluation.validity import (check_agreement, check_control_separation, check_flip_rate,
                                        check_identical_pairs, check_length, judgment_rows, length_correlation,
                                        verdict)
from ladder.io import rounded
from ladder.stage import stage

log = logging.getLogger("ladder.metrics")


def validity_report(judged, identical, replies: dict, rewards: dict, lengths: dict, ratings: dict,
                    controlled: tuple[dict, float], generated: list[str], anchor: str, params: dict) -> dict:
    """Every check of ladder/evaluation/validity.py on this run's judgments, and the verdict (the flip rate on pairs of
    different replies only)."""
    import polars as pl

    thresholds = params["validity"]
    on_generated = judged.filter(pl.col("model_a").is_in(generated) & pl.col("model_b").is_in(generated))
    generated_rows = judgment_rows(on_generated)
    lc_ratings, coefficient = controlled
    return verdict({
        "identical_pairs": check_identical_pairs([] if identical is None else identical["p_first"].to_list(),
                                                 thresholds["max_identical_bias"]),
        "flip_rate": check_flip_rate(on_generated, thresholds["max_flip_rate"], replies),
        "control_separation": check_control_separation(judgment_rows(judged), thresholds["min_control_separation"],
                                                       params["bootstrap"], params["seed"]),
        "judge_reward_agreement": check_agreement(generated_rows, rewards, thresholds["min_judge_reward_agreement"]),
        "length": check_length(ratings, lc_ratings, coefficient, length_correlation(generated_rows, lengths),
                               generated, anchor, thresholds["max_length_shift"]),
    })


@stage("metrics")
def main(all_params: dict) -> None:
    import polars as pl

    from ladder.io import read_parquet, write_json

    params = all_params["metrics"]
    folder = paths.GENERATIONS
    for name in ("prompts", "responses", "judgments"):
        if not (folder / f"{name}.parquet").is_file():
            raise InputError(f"{folder / name}.parquet is missing: rerun the inference stage")
    responses = read_parquet(folder / "responses.parquet")
    judged = read_parquet(folder / "judgments.parquet")
    identical = read_parquet(folder / "identical.parquet") if (folder / "identical.parquet").is_file() else None
    if "control" not in responses.columns:
        responses = responses.with_columns(pl.lit(False).alias("control"))
    models = list(dict.fromkeys(responses["model"].to_list()))
    controls = set(responses.filter(pl.col("control"))["model"].to_list())
    generated = [m for m in models if m not in controls]
    anchor = params["anchor"] if params["anchor"] in generated else (generated or models)[0]
    rows = judgment_rows(judged)
    pairs = [(a, b, p) for _, a, b, p in rows]
    ratings = fit_elo(pairs, models, anchor, params["anchor_rating"])
    intervals = bootstrap_elo(rows, models, anchor, params["anchor_rating"], params["bootstrap"], params["seed"])
    lengths = {(r["prompt_id"], r["model"]): len(r["reply"]) for r in responses.iter_rows(named=True)}
    features = length_feature([lengths[(pr, a)] for pr, a, _, _ in rows], [lengths[(pr, b)] for pr, _, b, _ in rows])
    lc_ratings, (coefficient,) = fit_elo_controlled(pairs, features, models, anchor, params["anchor_rating"])
    lc_intervals = bootstrap_elo(rows, models, anchor, params["anchor_rating"], params["bootstrap"], params["seed"],
                                 features=features)
    wins = win_matrix(rows, models)
    rewards = {(r["prompt_id"], r["model"]): r["reward"] for r in responses.iter_rows(named=True)}
    per_model = {}
    for m in sorted(models, key=lambda m: -ratings[m]):
        mine = responses.filter(pl.col("model") == m)
        per_model[m] = {"elo": round(ratings[m], 1), "elo_95": [round(x, 1) for x in intervals[m]],
                        "elo_length_controlled": round(lc_ratings[m], 1),
                        "elo_length_controlled_95": [round(x, 1) for x in lc_intervals[m]],
                        "control": m in controls,
                        "win_rate_vs_anchor": rounded(wins.get((m, anchor))),
                        "mean_reward": rounded(mine["reward"].mean()),
                        "mean_reply_chars": rounded(float(mine["reply"].str.len_chars().mean())),
                        "empty_replies": int((mine["reply"].str.len_chars() == 0).sum())}
    replies = {(r["prompt_id"], r["model"]): r["reply"] for r in responses.iter_rows(named=True)}
    try:
        validity = validity_report(judged, identical, replies, rewards, lengths, ratings, (lc_ratings, coefficient),
                                   generated, anchor, params)
    except ValueError as error:  # a three-label judge's judgments without each order's tie probability
        raise InputError(f"{folder / 'judgments.parquet'}: {error}") from None
    report = {"validity": validity, "anchor": anchor, "prompts": responses["prompt_id"].n_unique(),
              "judgments": len(rows), "models": per_model, "stages": headlines(paths.METRICS)}
    write_json(report, paths.metrics_file("eval"))
    write_json(summary(report, json.loads(paths.metrics_file("score").read_text())), paths.metrics_file("headlines"))
    write_json([{"model": m, "elo": v["elo"], "low": v["elo_95"][0], "high": v["elo_95"][1], "control": v["control"]}
                for m, v in per_model.items()], paths.PLOTS / "eval" / "elo.json")
    write_json([{"model": x, "opponent": y, "win_rate": rounded(w)} for (x, y), w in sorted(wins.items())],
               paths.PLOTS / "eval" / "win_rates.json")
    prompts = read_parquet(folder / "prompts.parquet").to_dicts()
    write_json(review_examples(prompts, replies, anchor, best_generated(ratings, generated, anchor), params["seed"]),
               paths.EXAMPLES)
    log.info("ladder: %s", {m: v["elo"] for m, v in per_model.items()})
    log.info("verdict: %s", "valid" if validity["valid"] else "INVALID: " + "; ".join(validity["reasons"]))

if __name__ == "__main__":
    main()
