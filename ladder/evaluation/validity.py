"""When to trust the ladder: the judge's evidence on the very replies it ranked, and a verdict with reasons.

A learned judge ranks models only as well as it reads the replies in front of it. Each check here turns one kind of
evidence into a figure, a threshold from params (`metrics.validity`) and a pass/fail:
- identical_pairs: P(first wins) of a reply against itself, one order, no TTA: 0.5 when the judge reads replies,
  not positions;
- flip_rate: how often the judge's pick (a, b, or for a three-label judge tie) on the generated pairs (two
  different replies) changes when the order is swapped;
- control_separation: P(reference beats shuffled) (the data's own next reply against a fluent, in-domain, off-topic
  reply), with a bootstrap interval over prompts: a judge that cannot tell them apart is not measuring replies;
- judge_reward_agreement: how often the judge and the reward model, trained on different rows, pick the same reply;
- length: how far the ratings move once a length covariate is fitted beside them (Chatbot Arena's style control).
A check that cannot be computed fails and says why; the ladder is valid when every check passes. A tie counts half a
win throughout (FastChat's convention).
"""
from __future__ import annotations

from ladder.evaluation.elo import soft_outcome
from ladder.io import rounded

CHECKS = ("identical_pairs", "flip_rate", "control_separation", "judge_reward_agreement", "length")
REFERENCE, SHUFFLED = "reference", "shuffled"


def judgment_rows(judged) -> list[tuple[str, str, str, float]]:
    """(prompt, model_a, model_b, a's soft outcome) per judgment; p_tie is null for a two-label judge."""
    tie = judged["p_tie"] if "p_tie" in judged.columns else [None] * judged.height
    return [(prompt, a, b, soft_outcome(p, t)) for prompt, a, b, p, t in
            zip(judged["prompt_id"], judged["model_a"], judged["model_b"], judged["p_a"], tie)]


def agreement(judgments: list[tuple[str, str, str, float]], rewards: dict[tuple[str, str], float]) -> float | None:
    """How often the judge's pick (a's soft outcome above 0.5) is the reply the reward model scores higher (equal
    scores, and judgments of exactly 0.5, skipped)."""
    votes = agreement_votes(judgments, rewards)
    return sum(votes) / len(votes) if votes else None


def agreement_votes(judgments, rewards) -> list[bool]:
    return [(p > 0.5) == (rewards[(prompt, a)] > rewards[(prompt, b)])
            for prompt, a, b, p in judgments if rewards[(prompt, a)] != rewards[(prompt, b)] and p != 0.5]


def order_outcomes(judged) -> tuple[list[tuple[float, float | None]], list[tuple[float, float | None]]]:
    """a's (P(a wins), P(tie)) in each order alone: (a, b) and (b, a); P(tie) is None for a two-label judge. A
    three-label judge's tie probabilities per order (p_tie_ab, p_tie_ba) must be there, or the figures would read
    every tie as a loss for a."""
    import polars as pl

    columns = ["p_a_ab", "p_a_ba"]
    if "p_tie" in judged.columns and judged["p_tie"].is_not_null().any():
        for column in ("p_tie_ab", "p_tie_ba"):
            if column not in judged.columns:
                raise ValueError(f"judgments: column {column!r} is missing: a three-label judge (p_tie set) needs "
                                 "the tie probability of each order for the position-bias figures")
        columns += [pl.col("p_tie_ab").fill_null(0.0), pl.col("p_tie_ba").fill_null(0.0)]
    return score_orders(judged.select(columns).to_dicts())


def score_orders(scores: list[dict]) -> tuple[list[tuple[float, float | None]], list[tuple[float, float | None]]]:
    """a's (P(a wins), P(tie)) in each order alone, from the judge's scores (ladder.judge.classifier.Judge.score: p_a_ab, p_a_ba
    and, three labels, p_tie_ab, p_tie_ba), as order_figures takes them."""
    return ([(s["p_a_ab"], s.get("p_tie_ab")) for s in scores], [(s["p_a_ba"], s.get("p_tie_ba")) for s in scores])


def position_bias(judged) -> dict:
    """How the judge treated the order of the replies: the first reply's mean soft outcome over both orders (0.5 is
    unbiased; a tie is half a win) and how often its pick flips when the order is swapped (TTA averages this
    away)."""
    if judged.height == 0:
        return {"first_position_preference": None, "flip_rate": None}
    first, flips = order_figures(*order_outcomes(judged))
    return {"first_position_preference": rounded(first), "flip_rate": rounded(flips)}


def pick(p_a: float, p_tie: float | None = None) -> str:
    """The judge's pick on one order, from a's side: its most probable label, a, b or (three labels) tie, as
    MT-Bench's judges answer A, B or tie; a two-label judge picks a at P(a) >= 0.5."""
    if p_tie is None:
        return "a" if p_a >= 0.5 else "b"
    probabilities = {"a": p_a, "b": 1 - p_a - p_tie, "tie": p_tie}
    return max(probabilities, key=probabilities.get)


def order_figures(ab, ba) -> tuple[float, float]:
    """(mean share of the first reply, flip rate) from a's (P(a wins), P(tie)) with a first (`ab`) and with a
    second (`ba`), over pairs: the one definition the judge's eval (classifier) and the ladder (metrics) both
    report. The share counts a tie half; a flip is a pair whose pick changes with the order (MT-Bench's
    inconsistency: a, b and tie are three answers), so a judge that calls two replies of one kind a tie in both
    orders is consistent, where the soft outcome (near 0.5 on both sides) would flip on noise."""
    pairs = list(zip(ab, ba))
    return (sum((soft_outcome(*x) + 1 - soft_outcome(*y)) / 2 for x, y in pairs) / len(pairs),
            sum(pick(*x) != pick(*y) for x, y in pairs) / len(pairs))


# ------------------------------------------------------------------------------------------------ the checks
# Each returns (figures, reason): figures always hold value, threshold and pass; reason is one line when it fails.

def check_identical_pairs(p_first: list[float], max_bias: float) -> tuple[dict, str | None]:
    """|mean P(first wins) - 0.5| over a reply judged against itself, one order, no TTA."""
    if not p_first:
        return ({"value": None, "threshold": max_bias, "pass": False, "pairs": 0},
                "no identical pairs were judged (data/generations/identical.parquet missing or empty): rerun inference")
    mean = sum(p_first) / len(p_first)
    bias = abs(mean - 0.5)
    figures = {"value": rounded(bias), "threshold": max_bias, "pass": bias <= max_bias,
               "mean_p_first": rounded(mean), "pairs": len(p_first)}
    return figures, None if figures["pass"] else (
        f"the judge gives the first of two identical replies P = {mean:.3f}, {bias:.3f} from 0.5 (at most {max_bias})")


def check_flip_rate(generated_judgments, max_flip_rate: float, replies: dict | None = None) -> tuple[dict, str | None]:
    """The flip rate on the pairs of generated replies (controls left out: they are not what the ladder ranks).
    With `replies` ({(prompt_id, model): reply}), pairs of two equal replies are left out and counted: they hold
    no preference to flip, and any position bias at all would count them as flips (identical_pairs measures it)."""
    import polars as pl

    same = 0
    if replies is not None and generated_judgments.height:
        equal = [replies[(p, a)] == replies[(p, b)] for p, a, b in zip(
            generated_judgments["prompt_id"], generated_judgments["model_a"], generated_judgments["model_b"])]
        same = sum(equal)
        generated_judgments = generated_judgments.filter(~pl.Series(equal, dtype=pl.Boolean))
    bias = position_bias(generated_judgments)
    rate = bias["flip_rate"]
    if rate is None:
        return ({"value": None, "threshold": max_flip_rate, "pass": False, "pairs": 0, "equal_replies_left_out": same},
                "no pair of different generated replies was judged: the flip rate needs two generated models")
    ab, ba = order_outcomes(generated_judgments)
    # beside it, the reading before picks counted a tie (a's soft outcome either side of 0.5): for comparison
    soft = sum((soft_outcome(*x) >= 0.5) != (soft_outcome(*y) >= 0.5) for x, y in zip(ab, ba)) / len(ab)
    figures = {"value": rate, "threshold": max_flip_rate, "pass": rate <= max_flip_rate,
               "first_position_preference": bias["first_position_preference"], "pairs": generated_judgments.height,
               "equal_replies_left_out": same, "soft_outcome_flip_rate": rounded(soft)}
    return figures, None if figures["pass"] else (
        f"the judge's pick flips with the order on {rate:.0%} of the generated pairs (at most {max_flip_rate:.0%})")


def separation_by_prompt(judgments: list[tuple[str, str, str, float]]) -> dict[str, float]:
    """P(reference beats shuffled) per prompt, whichever side of the judgment each control sat on."""
    out = {}
    for prompt, a, b, p in judgments:
        if (a, b) == (REFERENCE, SHUFFLED):
            out[prompt] = p
        elif (a, b) == (SHUFFLED, REFERENCE):
            out[prompt] = 1 - p
    return out


def mean_interval(values: list[float], rounds: int, seed: int) -> tuple[float, float]:
    """2.5% and 97.5% points of the mean over `rounds` resamplings of `values` with replacement."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    means = data[np.random.default_rng(seed).integers(0, len(data), (rounds, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def check_control_separation(judgments, minimum: float, rounds: int, seed: int) -> tuple[dict, str | None]:
    """Passes when the 95% interval of P(reference beats shuffled), bootstrapped over prompts, lies above `minimum`."""
    by_prompt = separation_by_prompt(judgments)
    if not by_prompt:
        return ({"value": None, "threshold": minimum, "pass": False, "prompts": 0},
                "no reference-against-shuffled judgments: set inference.controls to [reference, shuffled]")
    values = [by_prompt[k] for k in sorted(by_prompt)]
    mean = sum(values) / len(values)
    low, high = mean_interval(values, rounds, seed)
    # compared at 3 decimals: a judge that reads only positions gives 0.5 give or take float noise under TTA, and
    # a separation below a thousandth is none
    figures = {"value": rounded(mean), "threshold": minimum, "pass": round(low, 3) > minimum,
               "interval_95": [rounded(low), rounded(high)], "prompts": len(values)}
    return figures, None if figures["pass"] else (
        f"P(reference beats shuffled) is {mean:.3f}, 95% interval [{low:.3f}, {high:.3f}] over {len(values)} prompts, "
        f"not above {minimum}: the judge does not tell the conversation's own reply from an off-topic one")


def check_agreement(judgments, rewards, minimum: float) -> tuple[dict, str | None]:
    """The judge's and the reward model's picks agree on at least `minimum` of the generated pairs they both decide."""
    votes = agreement_votes(judgments, rewards)
    if not votes:
        return ({"value": None, "threshold": minimum, "pass": False, "pairs": 0},
                "no generated pair that both the judge and the reward model decide (equal rewards or P = 0.5)")
    value = sum(votes) / len(votes)
    figures = {"value": rounded(value), "threshold": minimum, "pass": value >= minimum, "pairs": len(votes)}
    return figures, None if figures["pass"] else (
        f"the judge and the reward model pick the same reply on {value:.0%} of {len(votes)} generated pairs "
        f"(at least {minimum:.0%})")


def length_correlation(judgments, lengths: dict[tuple[str, str], int]) -> float | None:
    """Pearson correlation of a's soft outcome with the length ratio (len_a - len_b) / (len_a + len_b + 1)."""
    import numpy as np

    if len(judgments) < 2:
        return None
    outcome = np.array([p for *_, p in judgments])
    la = np.array([lengths[(pr, a)] for pr, a, _, _ in judgments], dtype=float)
    lb = np.array([lengths[(pr, b)] for pr, _, b, _ in judgments], dtype=float)
    ratio = (la - lb) / (la + lb + 1)
    if outcome.std() == 0 or ratio.std() == 0:
        return None
    return float(np.corrcoef(outcome, ratio)[0, 1])


def check_length(raw: dict[str, float], controlled: dict[str, float], coefficient: float, correlation: float | None,
                 generated: list[str], anchor: str, max_shift: float) -> tuple[dict, str | None]:
    """Passes when no generated model's rating moves more than `max_shift` Elo once the length covariate is fitted
    beside the ratings: the ranking then says something about the replies beyond their length."""
    from ladder.evaluation.elo import ELO_SCALE

    movers = {m: controlled[m] - raw[m] for m in generated if m != anchor}
    if not movers:
        return ({"value": None, "threshold": max_shift, "pass": False},
                "no generated model besides the anchor: nothing to compare with and without length control")
    worst = max(movers, key=lambda m: (abs(movers[m]), m))
    shift = abs(movers[worst])
    figures = {"value": round(shift, 1), "threshold": max_shift, "pass": shift <= max_shift, "model": worst,
               "length_coefficient": rounded(coefficient), "elo_per_sd_length": round(ELO_SCALE * coefficient, 1),
               "outcome_length_correlation": rounded(correlation)}
    return figures, None if figures["pass"] else (
        f"{worst}'s rating moves {shift:.1f} Elo once reply length is controlled (at most {max_shift}): the judge's "
        f"preference follows length ({ELO_SCALE * coefficient:+.1f} Elo per standard deviation of the length ratio)")


def verdict(results: dict[str, tuple[dict, str | None]]) -> dict:
    """{"valid", "reasons" (one line per failed check, in CHECKS order), "checks"}."""
    names = [n for n in CHECKS if n in results] + [n for n in results if n not in CHECKS]
    reasons = [f"{n}: {results[n][1] or 'failed'}" for n in names if not results[n][0]["pass"]]
    return {"valid": not reasons, "reasons": reasons, "checks": {n: results[n][0] for n in names}}
