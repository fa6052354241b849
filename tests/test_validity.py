"""When to trust the ladder: controls, each validity check on constructed judgments, the length-controlled fit against
Chatbot Arena's style control, and a broken judge run through the inference and metrics stages."""
from __future__ import annotations

import json
import math
import random
from collections import Counter

import polars as pl
import pytest

from ladder.evaluation.controls import control_replies, derangement, eval_prompts, held_out_prompts, identical_rows
from ladder.evaluation.elo import ELO_SCALE, bootstrap_elo, fit_elo, fit_elo_controlled, length_feature
from ladder.evaluation.examples import best_generated, review_examples
from ladder.evaluation.validity import (CHECKS, check_agreement, check_control_separation, check_flip_rate,
                             check_identical_pairs, check_length, length_correlation, pick, verdict)


# ------------------------------------------------------------------------------------------------ controls

def prompt(i: int, source: str) -> dict:
    return {"prompt_id": f"{source}{i:02d}", "source": source, "reference": f"reply of {source}{i:02d}",
            "messages": [{"role": "user", "content": f"hello {i}"}]}


def test_derangement_moves_every_item():
    rng = random.Random(0)
    for n in range(2, 9):
        for _ in range(20):
            order = derangement(n, rng)
            assert sorted(order) == list(range(n)) and all(order[i] != i for i in range(n))


def test_shuffled_is_another_reply_of_the_same_source_and_reference_is_the_own():
    prompts = [prompt(i, "chai") for i in range(5)] + [prompt(i, "anime") for i in range(3)] + [prompt(0, "solo")]
    pool = prompts + [prompt(9, "solo"), prompt(7, "lonely")]
    replies = control_replies(prompts, pool, ["reference", "shuffled"], seed=0)
    assert replies["reference"] == [p["reference"] for p in prompts]
    own = {p["reference"]: p["source"] for p in pool}
    for p, reply in zip(prompts, replies["shuffled"]):
        assert reply != p["reference"] and own[reply] == p["source"]
    assert replies["shuffled"][-1] == "reply of solo09"  # a single chosen prompt borrows from its source's pool
    assert sorted(replies["shuffled"][:5]) == sorted(p["reference"] for p in prompts[:5])  # a permutation
    assert replies == control_replies(prompts, pool, ["reference", "shuffled"], seed=0)
    assert replies["shuffled"] != control_replies(prompts, pool, ["shuffled"], seed=1)["shuffled"]
    # a source with no other eval conversation borrows from another source
    lonely = control_replies([prompt(7, "lonely")], pool, ["shuffled"], seed=0)["shuffled"][0]
    assert lonely != "reply of lonely07" and lonely in own
    with pytest.raises(ValueError, match="two eval conversations"):
        control_replies([prompt(7, "lonely")], [prompt(7, "lonely")], ["shuffled"], seed=0)
    with pytest.raises(ValueError, match="unknown control"):
        control_replies(prompts, pool, ["gold"], seed=0)


def test_thumbs_down_conversations_are_no_prompts(tmp_path):
    def convo(i):
        return [{"role": "assistant", "content": f"hi {i}"}, {"role": "user", "content": f"u{i}"},
                {"role": "assistant", "content": f"a{i}"}]

    pl.DataFrame([{"id": f"{i:02d}", "source": "chai", "messages": convo(i), "split": "eval",
                   "thumbs_up": [True, False, None][i % 3]} for i in range(9)]).write_parquet(tmp_path / "c.parquet")
    prompts = eval_prompts(tmp_path / "c.parquet")
    assert [p["prompt_id"] for p in prompts] == ["00", "02", "03", "05", "06", "08"]
    assert prompts[1] == {"prompt_id": "02", "source": "chai", "messages": convo(2)[:2], "reference": "a2"}
    assert len(held_out_prompts(tmp_path / "c.parquet", 4, seed=0)) == 4
    pl.read_parquet(tmp_path / "c.parquet").drop("thumbs_up").write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="thumbs_up"):
        eval_prompts(tmp_path / "bad.parquet")


def test_identical_rows_pair_every_reply_with_itself():
    prompts = [prompt(i, "chai") for i in range(3)]
    rows = identical_rows({"base": ["x0", "x1", "x2"], "reference": ["r0", "r1", "r2"]}, prompts)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert all(r["response_a"] == r["response_b"] for r in rows)
    assert {r["response_a"] for r in rows if r["model"] == "reference"} == {"r0", "r1", "r2"}


# ------------------------------------------------------------------------------------------------ the checks

def test_identical_pairs_check():
    fair, reason = check_identical_pairs([0.48, 0.53, 0.5, 0.51], 0.05)
    assert fair["pass"] and reason is None and fair["value"] == pytest.approx(0.005)
    biased, reason = check_identical_pairs([0.86] * 10, 0.05)
    assert not biased["pass"] and biased["value"] == pytest.approx(0.36) and "0.860" in reason
    none, reason = check_identical_pairs([], 0.05)
    assert not none["pass"] and "identical.parquet" in reason


def orders(ab: list[float], ba: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"p_a_ab": ab, "p_a_ba": ba})


def test_flip_rate_check():
    steady, reason = check_flip_rate(orders([0.9, 0.3, 0.7, 0.2, 0.6], [0.8, 0.2, 0.6, 0.4, 0.7]), 0.2)
    assert steady["pass"] and steady["value"] == 0.0 and reason is None
    first_wins, reason = check_flip_rate(orders([0.86] * 5, [0.14] * 5), 0.2)  # the position reader of issue 14
    assert not first_wins["pass"] and first_wins["value"] == 1.0 and "100%" in reason
    assert first_wins["first_position_preference"] == pytest.approx(0.86)
    empty, reason = check_flip_rate(orders([], []), 0.2)
    assert not empty["pass"] and "two generated models" in reason


def test_a_flip_is_a_changed_pick_and_a_tie_is_a_pick():
    """MT-Bench's consistency: a three-label judge that calls two replies of one kind a tie in both orders is
    consistent, though a's soft outcome (a tie counting half) falls either side of 0.5; a tie in one order and a
    pick in the other is a flip."""
    assert pick(0.6) == "a" and pick(0.5) == "a" and pick(0.4) == "b"
    assert pick(0.2, 0.7) == "tie" and pick(0.5, 0.1) == "a" and pick(0.1, 0.3) == "b"
    tie_both = orders([0.16, 0.1], [0.14, 0.12]).with_columns(  # soft outcomes 0.51 / 0.49 and 0.5 / 0.5
        p_tie=pl.Series([0.7, 0.8]), p_tie_ab=pl.Series([0.7, 0.8]), p_tie_ba=pl.Series([0.7, 0.76]))
    steady, _ = check_flip_rate(tie_both, 0.2)
    assert steady["value"] == 0.0 and steady["pass"] and steady["soft_outcome_flip_rate"] == 0.5
    half = orders([0.2, 0.8], [0.6, 0.7]).with_columns(  # tie then a; a then a
        p_tie=pl.Series([0.3, 0.1]), p_tie_ab=pl.Series([0.7, 0.1]), p_tie_ba=pl.Series([0.1, 0.1]))
    flipped, _ = check_flip_rate(half, 0.2)
    assert flipped["value"] == 0.5 and not flipped["pass"]


def test_flip_rate_leaves_out_pairs_of_equal_replies():
    """sft and merged writing the same reply: any position bias flips that pair, which says nothing about how the
    judge reads two different replies (identical_pairs measures the bias)."""
    judged = orders([0.55, 0.55, 0.9, 0.8], [0.45, 0.45, 0.85, 0.1]).with_columns(
        prompt_id=pl.Series(["p1", "p2", "p1", "p2"]), model_a=pl.Series(["sft", "sft", "base", "base"]),
        model_b=pl.Series(["merged", "merged", "sft", "sft"]))
    replies = {("p1", "sft"): "Shall we?", ("p1", "merged"): "Shall we?", ("p2", "sft"): "Come.",
               ("p2", "merged"): "Come.", ("p1", "base"): "Hm.", ("p2", "base"): "Yes."}
    counted, _ = check_flip_rate(judged, 0.2)
    assert counted["value"] == 0.75 and not counted["pass"]
    different, reason = check_flip_rate(judged, 0.2, replies)
    assert different["value"] == 0.5 and different["pairs"] == 2 and different["equal_replies_left_out"] == 2
    only_equal, reason = check_flip_rate(judged.head(2), 0.2, replies)
    assert not only_equal["pass"] and "different generated replies" in reason


def separation_rows(values: list[float], flip_every: int = 2) -> list[tuple]:
    """(reference, shuffled) judgments, every other one listed the other way round."""
    return [(f"p{i}", "reference", "shuffled", v) if i % flip_every else (f"p{i}", "shuffled", "reference", 1 - v)
            for i, v in enumerate(values)] + [(f"p{i}", "base", "reference", 0.3) for i in range(len(values))]


def test_control_separation_check():
    rng = random.Random(0)
    clear, reason = check_control_separation(separation_rows([rng.uniform(0.6, 0.95) for _ in range(30)]), 0.5, 200, 0)
    assert clear["pass"] and reason is None and clear["prompts"] == 30
    assert 0.5 < clear["interval_95"][0] <= clear["value"] <= clear["interval_95"][1]
    blind, reason = check_control_separation(separation_rows([rng.uniform(0.3, 0.72) for _ in range(30)]), 0.5, 200, 0)
    assert not blind["pass"] and blind["interval_95"][0] <= 0.5 and "reference beats shuffled" in reason
    # a mean above 0.5 is not enough: the interval over few prompts must clear it
    few, _ = check_control_separation(separation_rows([0.9, 0.2, 0.8, 0.7]), 0.5, 200, 0)
    assert few["value"] > 0.5 and not few["pass"]
    assert check_control_separation(separation_rows([0.9] * 3), 0.5, 50, 1) == \
        check_control_separation(separation_rows([0.9] * 3), 0.5, 50, 1)
    missing, reason = check_control_separation([("p0", "base", "sft", 0.6)], 0.5, 50, 0)
    assert not missing["pass"] and "inference.controls" in reason


def test_agreement_check():
    rows = [(f"p{i}", "x", "y", 0.8 if i % 4 else 0.3) for i in range(40)]  # the judge picks x on 30 of 40
    rewards = {**{(f"p{i}", "x"): 1.0 for i in range(40)}, **{(f"p{i}", "y"): 0.0 for i in range(40)}}
    agree, reason = check_agreement(rows, rewards, 0.6)
    assert agree["pass"] and agree["value"] == 0.75 and agree["pairs"] == 40
    disagree, reason = check_agreement(rows, {k: -v for k, v in rewards.items()}, 0.6)
    assert not disagree["pass"] and disagree["value"] == 0.25 and "25%" in reason
    undecided, reason = check_agreement(rows, {k: 0.0 for k in rewards}, 0.6)  # equal rewards decide nothing
    assert not undecided["pass"] and undecided["pairs"] == 0


# ------------------------------------------------------------------------------------------------ length control

TRUE = {"base": 0.0, "sft": 60.0, "merged": 120.0}


def length_battles(length_effect: float, n: int = 400, seed: int = 0):
    """Hard outcomes (a win, a loss or a tie) drawn from true ratings plus `length_effect` log-odds per unit of the
    raw length ratio; the better models are not the longer ones, so length and quality are not confounded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    models, rows, lengths = list(TRUE), [], {}
    for i in range(n):
        a, b = rng.choice(models, 2, replace=False)
        la, lb = int(rng.integers(5, 200)), int(rng.integers(5, 200))
        logit = (TRUE[a] - TRUE[b]) / ELO_SCALE + length_effect * (la - lb) / (la + lb + 1)
        u = rng.random()
        outcome = 0.5 if u < 0.15 else float(rng.random() < 1 / (1 + math.exp(-logit)))
        rows.append((f"p{i}", str(a), str(b), outcome))
        lengths[(f"p{i}", str(a))], lengths[(f"p{i}", str(b))] = la, lb
    return rows, lengths


def fastchat_style_control(rows, lengths, models):
    """Chatbot Arena's style control as fastchat/serve/monitor/rating_systems.py fits it (preprocess_for_style,
    contextual_bt_loss_and_grad, fit_contextual_bt), written again here with its regularisation set to 0: features
    (a - b) / (a + b + 1), standardised by their mean and standard deviation; outcomes 1, 0.5, 0; logit
    ln(10) * (r_a - r_b) + features @ beta, minimised by scipy's L-BFGS-B; ratings times 400 are Elo."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import expit

    index = {m: i for i, m in enumerate(models)}
    matchups = np.array([[index[a], index[b]] for _, a, b, _ in rows])
    outcomes = np.array([o for *_, o in rows])
    diff = np.array([lengths[(p, a)] - lengths[(p, b)] for p, a, b, _ in rows], dtype=float)
    total = np.array([lengths[(p, a)] + lengths[(p, b)] for p, a, b, _ in rows], dtype=float) + 1
    style = diff / total
    features = ((style - style.mean()) / style.std())[:, None]
    alpha = math.log(10)

    def loss_and_grad(params):
        ratings, beta = params[:len(models)], params[len(models):]
        probs = expit(alpha * (ratings[matchups[:, 0]] - ratings[matchups[:, 1]]) + features @ beta)
        loss = -(np.log(probs) * outcomes + np.log(1 - probs) * (1 - outcomes)).sum()
        error = outcomes - probs
        grad = np.zeros_like(params)
        np.add.at(grad[:len(models)], matchups[:, 0], -alpha * error)
        np.add.at(grad[:len(models)], matchups[:, 1], alpha * error)
        grad[len(models):] = -features.T @ error
        return loss, grad

    result = minimize(loss_and_grad, np.zeros(len(models) + 1), jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "gtol": 1e-12, "ftol": 1e-15})
    ratings = 400 * result["x"][:len(models)]
    return {m: ratings[i] - ratings[index["base"]] for i, m in enumerate(models)}, result["x"][-1]


def test_length_controlled_fit_matches_chatbot_arenas_style_control():
    rows, lengths = length_battles(length_effect=3.0)
    models = list(TRUE)
    features = length_feature([lengths[(p, a)] for p, a, _, _ in rows], [lengths[(p, b)] for p, _, b, _ in rows])
    ours, (beta,) = fit_elo_controlled([(a, b, o) for _, a, b, o in rows], features, models, "base", 0.0)
    reference, reference_beta = fastchat_style_control(rows, lengths, models)
    assert max(abs(ours[m] - reference[m]) for m in models) < 1e-4, (ours, reference)
    assert beta == pytest.approx(reference_beta, abs=1e-6) and beta > 0.3  # a real length preference, found
    # without the covariate the ratings differ: the plain fit credits models with what length explains
    plain = fit_elo([(a, b, o) for _, a, b, o in rows], models, "base", 0.0)
    assert max(abs(plain[m] - ours[m]) for m in models) > 1


def test_without_a_length_effect_the_controlled_ratings_stay_put():
    rows, lengths = length_battles(length_effect=0.0, n=1500, seed=3)
    models = list(TRUE)
    features = length_feature([lengths[(p, a)] for p, a, _, _ in rows], [lengths[(p, b)] for p, _, b, _ in rows])
    pairs = [(a, b, o) for _, a, b, o in rows]
    controlled, (beta,) = fit_elo_controlled(pairs, features, models, "base", 1000.0)
    plain = fit_elo(pairs, models, "base", 1000.0)
    assert abs(beta) < 0.1 and max(abs(controlled[m] - plain[m]) for m in models) < 10
    intervals = bootstrap_elo(rows, models, "base", 1000.0, 30, 0, features=features)
    assert all(low <= controlled[m] + 1e-6 and controlled[m] - 1e-6 <= high for m, (low, high) in intervals.items())
    assert abs(length_correlation([r for r in rows if r[3] != 0.5], lengths)) < 0.1
    same = length_feature([10, 10, 10], [10, 10, 10])  # constant lengths: a zero column, no division by zero
    assert list(same) == [0.0, 0.0, 0.0]


def test_length_check():
    raw = {"base": 1000.0, "sft": 1100.0, "reference": 1300.0}
    ok, reason = check_length(raw, {"base": 1000.0, "sft": 1080.0, "reference": 1000.0}, 0.1, 0.05,
                              ["base", "sft"], "base", 50)
    assert ok["pass"] and ok["value"] == 20.0 and ok["model"] == "sft" and reason is None  # controls do not count
    bad, reason = check_length(raw, {"base": 1000.0, "sft": 1020.0, "reference": 1300.0}, 0.9, 0.6,
                               ["base", "sft"], "base", 50)
    assert not bad["pass"] and bad["value"] == 80.0 and "sft" in reason and "length" in reason
    assert bad["elo_per_sd_length"] == pytest.approx(ELO_SCALE * 0.9, abs=0.1)
    alone, reason = check_length(raw, raw, 0.0, None, ["base"], "base", 50)
    assert not alone["pass"] and "anchor" in reason


def test_verdict_lists_the_failed_checks_in_order():
    results = {"length": ({"value": 80, "threshold": 50, "pass": False}, "too long"),
               "flip_rate": ({"value": 0.0, "threshold": 0.2, "pass": True}, None),
               "identical_pairs": ({"value": 0.3, "threshold": 0.05, "pass": False}, "biased")}
    out = verdict(results)
    assert out["valid"] is False and out["reasons"] == ["identical_pairs: biased", "length: too long"]
    assert list(out["checks"]) == ["identical_pairs", "flip_rate", "length"]
    assert verdict({"flip_rate": results["flip_rate"]})["valid"] is True


def test_examples_are_chosen_by_the_seed_and_show_base_best_and_reference():
    prompts = [{**prompt(i, "chai"), "messages": [{"role": "user", "content": f"m{k}"} for k in range(5)]}
               for i in range(10)]
    replies = {(p["prompt_id"], m): f"{m} to {p['prompt_id']}" for p in prompts for m in ("base", "sft", "merged")}
    ratings = {"base": 1000.0, "sft": 1010.0, "merged": 1030.0, "reference": 1200.0}
    best = best_generated(ratings, ["base", "sft", "merged"], "base")
    assert best == "merged"  # the reference rates higher, but it is a control
    out = review_examples(prompts, replies, "base", best, seed=0)
    assert out["anchor"] == "base" and out["best_model"] == "merged" and len(out["examples"]) == 3
    first = out["examples"][0]
    assert [m["content"] for m in first["context"]] == ["m2", "m3", "m4"]
    assert first["replies"] == {"base": f"base to {first['prompt_id']}", "merged": f"merged to {first['prompt_id']}",
                                "reference": f"reply of {first['prompt_id']}"}
    assert out == review_examples(prompts, replies, "base", best, seed=0)
    chosen = {tuple(e["prompt_id"] for e in review_examples(prompts, replies, "base", best, seed=s)["examples"])
              for s in range(5)}
    assert len(chosen) > 1  # the seed, not the ratings, picks them


# ------------------------------------------------------------------------------------------------ a broken judge

METRICS_FILES = {"reward": {"eval": {"accuracy": 0.6, "roc_auc": 0.6}},
                 "sft": {"eval_loss_base": 2.0, "eval_loss": 1.9},
                 "dpo": {"method": "dpo", "reward_accuracy": 0.6, "reward_margin": 0.1},
                 "merge": {"max_abs_logit_difference": 0.0},
                 "judge": {"accuracy_tta": 0.5, "log_loss_tta": 1.0, "majority_baseline": 0.5,
                           "position_flip_rate": 0.5},
                 "quantize": {"formats": {"int8": {"kl_mean": 0.03, "top1_agreement": 0.9, "size_ratio_16bit": 0.6}}},
                 "clean": {"records": {"conversations": {"train": 20, "eval": 10}}, "rejected_rows": 2,
                           "removed_by": {"conversations": {"clean.dedup": 1}}, "warnings": ["a source emptied"]},
                 "score": {"sft": {"train": {"kept": 18}}, "dpo": {"train": {"kept": 0}},
                           "dpo_train_chosen_above_rejected": None}}
SOURCES = ("chai", "anime", "gpt_realm")


def conversations(n: int = 30) -> pl.DataFrame:
    rng = random.Random(0)
    topics = ["the lighthouse", "a broken sword", "the tea garden", "a night train", "the storm", "a lost cat"]
    rows = []
    for i in range(n):
        topic = rng.choice(topics)
        rows.append({"id": f"c{i:03d}", "source": SOURCES[i % 3], "row": str(i), "split": "eval" if i % 5 else "train",
                     "thumbs_up": None if i % 3 else i % 9 != 3,
                     "messages": [{"role": "system", "content": f"You are Mira, who talks about {topic}."},
                                  {"role": "assistant", "content": f"*waves* Hello! Ask me about {topic}."},
                                  {"role": "user", "content": f"Tell me about {topic}, please."},
                                  {"role": "assistant",
                                   "content": f"*smiles* {topic.capitalize()} is my favourite, {i}."}]})
    return pl.DataFrame(rows)


class LengthScorer:
    """Stands in for the reward model (not under test here): a longer reply scores higher."""

    def __init__(self, path, max_length, *args, **kwargs):
        pass

    def score_conversations(self, conversations):
        return [float(len(c[-1]["content"])) for c in conversations]


def broken_judge(folder, head_kind: str = "cls"):
    """A tiny judge trained one step on labels drawn at random: it has learned nothing about replies."""
    import torch
    from transformers import AutoTokenizer

    from ladder.judge.classifier import build_judge, encode_segments, pad_batch, prepare_tokenizer, save_judge
    from ladder.data.models import materialize, read_identity

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}
    materialize("tiny:bert", folder / "models/judge_base", seed=0)
    model = build_judge(folder / "models/judge_base", 2, 0.1, "none", lora, seed=0, kind=head_kind)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder / "models/judge_base"), False)
    rng = random.Random(0)
    fields = [(f"prompt {i}", f"reply {rng.random()}", f"other {rng.random()}") for i in range(8)]
    ids, segments = encode_segments(fields, tokenizer, 64, False)
    batch = pad_batch(tokenizer, [{"input_ids": i, **({"segments": s} if head_kind == "replies" else {})}
                                  for i, s in zip(ids, segments)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    model(**batch, labels=torch.tensor([rng.randrange(2) for _ in fields])).loss.backward()
    optimizer.step()
    settings = {"max_length": 64, "field_budget": None, "head_dropout": 0.1, "ties": "drop", "quantization": "none",
                "backbone": read_identity(folder / "models/judge_base"), "labels": ["model_a", "model_b"],
                "lora": lora, "head": head_kind}
    save_judge(model, tokenizer, settings, folder / "models/judge")


# The cls head reads positions when it has learned nothing; the replies head cannot prefer one by construction,
# so what gives it away is that it cannot tell the conversation's reply from an off-topic one.
@pytest.mark.parametrize("head_kind,reasons", [("cls", {"identical_pairs", "flip_rate", "control_separation"}),
                                               ("replies", {"control_separation"})])
def test_a_broken_judge_makes_the_ladder_invalid_through_the_stages(tmp_path, monkeypatch, head_kind, reasons,
                                                                   write_params):
    from click.testing import CliRunner

    import ladder.evaluation.chat_models
    import ladder.training.reward_model
    import ladder.training.trainer
    from stages.inference import main as inference_main
    from stages.metrics import main as metrics_main
    from ladder.data.models import tiny_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/clean").mkdir(parents=True)
    conversations().write_parquet(tmp_path / "data/clean/conversations.parquet")
    broken_judge(tmp_path, head_kind)
    (tmp_path / "metrics").mkdir()
    for stage, figures in METRICS_FILES.items():
        (tmp_path / f"metrics/{stage}.json").write_text(json.dumps(figures))
    params = {"inference": {"models": ["base", "merged"], "controls": ["reference", "shuffled"], "n_prompts": 20,
                            "seed": 0, "backend": "hf", "best_of": 1, "batch_size": 8,
                            "sampling": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 6,
                                         "max_input_tokens": 256}},
              "reward": {"max_length": 128},
              "metrics": {"anchor": "base", "anchor_rating": 1000, "bootstrap": 100, "seed": 0,
                          "validity": {"max_identical_bias": 0.05, "max_flip_rate": 0.2, "min_control_separation": 0.5,
                                       "min_judge_reward_agreement": 0.6, "max_length_shift": 50}}}
    write_params(tmp_path / "params.yaml", params)
    monkeypatch.setattr(ladder.training.reward_model, "Scorer", LengthScorer)
    chat = {name: tiny_model("llama", seed=seed) for name, seed in (("base", 0), ("merged", 1))}
    monkeypatch.setattr(ladder.evaluation.chat_models, "load_chat_model", lambda name, hw: chat[name])
    monkeypatch.setattr(ladder.training.trainer, "hardware",
                        lambda: {"cuda": False, "bf16": False, "flash_attn": False, "device": "cpu"})
    result = CliRunner().invoke(inference_main, [])
    assert result.exit_code == 0, result.output + repr(result.exception)

    responses = pl.read_parquet("data/generations/responses.parquet")
    prompts = pl.read_parquet("data/generations/prompts.parquet")
    assert prompts.height == 20 and set(responses["model"]) == {"base", "merged", "reference", "shuffled"}
    assert responses.filter(pl.col("control"))["model"].unique().sort().to_list() == ["reference", "shuffled"]
    reference = dict(zip(prompts["prompt_id"], prompts["reference"]))
    for row in responses.filter(pl.col("control")).iter_rows(named=True):
        assert row["samples"] == [row["reply"]] and row["reward"] == float(len(row["reply"]))
        if row["model"] == "reference":
            assert row["reply"] == reference[row["prompt_id"]]
    every = conversations()
    thumbs_down = set(every.filter(pl.col("thumbs_up") == False)["id"])  # noqa: E712
    assert thumbs_down and not thumbs_down & set(prompts["prompt_id"])
    owner = {r["messages"][-1]["content"]: (r["id"], r["source"]) for r in every.iter_rows(named=True)}
    source = dict(zip(every["id"], every["source"]))
    shuffled = responses.filter(pl.col("model") == "shuffled")
    for pid, reply in zip(shuffled["prompt_id"], shuffled["reply"]):
        assert owner[reply][0] != pid and owner[reply][1] == source[pid]
    judged = pl.read_parquet("data/generations/judgments.parquet")
    assert judged.height == 20 * 6
    identical = pl.read_parquet("data/generations/identical.parquet")
    assert identical.height == 20 * 4 and identical["p_first"].is_between(0, 1).all()
    assert Counter(identical["model"]) == {m: 20 for m in ("base", "merged", "reference", "shuffled")}

    result = CliRunner().invoke(metrics_main, [])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert next(iter(report)) == "validity"
    validity = report["validity"]
    assert validity["valid"] is False and set(validity["checks"]) == set(CHECKS)
    failed = {r.split(":")[0] for r in validity["reasons"]}
    assert reasons <= failed, validity
    assert failed == {n for n, c in validity["checks"].items() if not c["pass"]}
    # an invalid ladder still writes every rating, controls marked
    assert set(report["models"]) == {"base", "merged", "reference", "shuffled"}
    assert report["models"]["reference"]["control"] and not report["models"]["merged"]["control"]
    assert report["models"]["base"]["elo"] == 1000.0 and report["models"]["base"]["elo_length_controlled"] == 1000.0
    for figures in report["models"].values():
        low, high = figures["elo_length_controlled_95"]
        assert low - 1e-6 <= figures["elo_length_controlled"] <= high + 1e-6
    ladder = json.loads((tmp_path / "plots/eval/elo.json").read_text())
    assert {row["model"]: row["control"] for row in ladder}["shuffled"] is True
    examples = json.loads((tmp_path / "reports/examples.json").read_text())
    assert examples["best_model"] == "merged" and len(examples["examples"]) == 3
    assert all(set(e["replies"]) == {"base", "merged", "reference"} for e in examples["examples"])
    # the DVC metrics file: the verdict and the headline figures, under keys that are names, never free text
    headline = json.loads((tmp_path / "metrics/headlines.json").read_text())
    assert headline["valid"] is False
    assert headline["checks"] == {name: check["value"] for name, check in validity["checks"].items()}
    assert headline["elo"] == {m: f["elo"] for m, f in report["models"].items()}
    assert headline["judge"]["log_loss_tta"] == 1.0 and headline["quantize"]["int8"]["kl_mean"] == 0.03

    def leaves(node, path=()):
        if isinstance(node, dict):
            return [leaf for key, value in node.items() for leaf in leaves(value, (*path, key))]
        return [path]
    keys = leaves(headline)
    assert all(part.replace("_", "").replace("-", "").isalnum() for key in keys for part in key), keys
    assert len(keys) == 1 + len(CHECKS) + 4 * 2 + 3 + 2 + 2 + 2 + 1 + 4 + 3
