"""The reward model on tiny models: it learns, scores deterministically, filters, and makes self pairs."""
from __future__ import annotations

import json
import math
import os

import polars as pl
import pytest
import torch

from ladder.data.models import load_bundled_encoder_tokenizer, materialize
from ladder.training.reward_model import OBJECTIVE_FILE, Scorer, left_truncating, render, score_texts
from ladder.training.trainer import hardware
from ladder.evaluation.metrics import binary_metrics, roc_auc
from ladder.data.reward_filter import histograms, keep_mask, self_pairs
from ladder.training.reward_model import build_model, train

GOOD = ["*smiles* Tell me more about the dragon!", "Ah, the old map! I studied it for years.",
        "*bows* The festival lights are lovely tonight.", "The key? It opens the north tower, friend."]
BAD = ["ok", "lol", "I don't know.", "whatever"]


def params(**extra):
    trainer = {"max_steps": 100, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "logging_steps": 5}
    return {"objective": "regression", "max_length": 32, "lora": None, "seed": 0, "score_batch_size": 4,
            "trainer": trainer} | extra


@pytest.fixture
def base(tmp_path):
    folder = tmp_path / "judge_base"
    materialize("tiny:bert", folder, seed=0)
    return folder


def mse(model, tokenizer, texts, labels):
    scores = score_texts(model.eval(), tokenizer, texts, "regression", 32, 4)
    return sum((s - y) ** 2 for s, y in zip(scores, labels)) / len(labels)


@pytest.mark.parametrize("lora", [None, {"r": 8, "alpha": 32, "dropout": 0.0, "target_modules": ["query", "value"]}])
def test_training_lowers_the_loss_on_separable_data(base, tmp_path, monkeypatch, lora):
    monkeypatch.chdir(tmp_path)
    tokenizer = left_truncating(load_bundled_encoder_tokenizer())
    texts, labels = GOOD * 4 + BAD * 4, [1.0] * 16 + [0.0] * 16
    model = build_model(base, "regression", lora, seed=0)
    before_loss = mse(model, tokenizer, texts, labels)
    start = {n: t.clone() for n, t in build_model(base, "regression", None, seed=0).state_dict().items()}
    model.train()
    trained, figures = train(model, tokenizer, texts, labels, params(lora=lora), hardware())
    # 0.25 is what predicting the mean label gets: well below it, the model tells the two kinds apart.
    assert mse(trained, tokenizer, texts, labels) < min(0.15, before_loss / 2)
    assert math.isfinite(figures["train_loss"]) and "train_runtime" in figures
    end = trained.state_dict()
    assert set(end) == set(start)  # LoRA, if any, is merged: the result is a plain model
    changed = {n for n in start if not torch.equal(start[n], end[n])}
    assert {"classifier.weight", "classifier.bias"} <= changed
    if lora:  # only the adapted projections (merged) and the head move; everything else stays frozen
        assert changed == {n for n in start if n.startswith("classifier.") or (
            n.endswith(("query.weight", "value.weight")))}
    else:
        assert "bert.embeddings.word_embeddings.weight" in changed and len(changed) > len(start) // 2
    # Curves went to dvclive/reward, without run times (those vary; they belong in the timing file).
    logged = json.loads((tmp_path / "dvclive/reward/metrics.json").read_text())
    assert "train" in logged and not any("runtime" in k for k in json.dumps(logged).split('"'))


def test_classification_objective_scores_are_probabilities(base):
    tokenizer = left_truncating(load_bundled_encoder_tokenizer())
    model = build_model(base, "classification", None, seed=0).eval()
    scores = score_texts(model, tokenizer, GOOD + BAD, "classification", 32, 3)
    assert all(0.0 <= s <= 1.0 for s in scores) and len(scores) == 8


def test_scoring_is_deterministic_and_order_free(base):
    tokenizer = left_truncating(load_bundled_encoder_tokenizer())
    model = build_model(base, "regression", None, seed=0).eval()
    texts = GOOD + BAD + ["a much longer text " * 20]
    first = score_texts(model, tokenizer, texts, "regression", 32, 3)
    assert first == score_texts(model, tokenizer, texts, "regression", 32, 3)
    shuffled = score_texts(model, tokenizer, texts[::-1], "regression", 32, 3)[::-1]
    assert shuffled == pytest.approx(first, abs=1e-5)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_scoring_draws_a_bar_on_the_main_process_only(base, monkeypatch, capsys, rank):
    monkeypatch.setenv("RANK", rank)
    tokenizer = left_truncating(load_bundled_encoder_tokenizer())
    model = build_model(base, "regression", None, seed=0).eval()
    capsys.readouterr()
    scores = score_texts(model, tokenizer, GOOD + BAD, "regression", 32, 3)
    drawn = capsys.readouterr().err
    # 8 texts in batches of 3: the bar counts 3 batches
    assert ("reward model: scoring 8 texts" in drawn and "3/3" in drawn) == (rank == "0")
    assert rank == "0" or drawn == ""
    assert score_texts(model, tokenizer, GOOD + BAD, "regression", 32, 3, progress=False) == scores
    assert capsys.readouterr().err == ""  # the caller turned it off


def test_left_truncation_keeps_the_latest_turns():
    tokenizer = left_truncating(load_bundled_encoder_tokenizer())
    text = render([{"role": "user", "content": "early " * 50}, {"role": "assistant", "content": "the final verdict"}],
                  tokenizer)
    kept = tokenizer.decode(tokenizer(text, truncation=True, max_length=12)["input_ids"], skip_special_tokens=True)
    assert kept.endswith("the final verdict") and "user" not in kept


def test_keep_mask_keeps_the_right_fraction_of_train_and_all_eval():
    n = 200
    scores = pl.Series([((i * 37) % 101) / 100 for i in range(n)])
    splits = pl.Series(["eval" if i % 10 == 0 else "train" for i in range(n)])
    ids = pl.Series([f"id{i}" for i in range(n)])
    keep = keep_mask(scores, splits, ids, {"keep_top": 0.75})
    train = splits == "train"
    assert (keep & train).sum() == round(0.75 * train.sum()) and (keep | train).all()
    kept_min = scores.filter(keep & train).min()
    assert kept_min >= scores.filter(~keep & train).max()
    keep = keep_mask(scores, splits, ids, {"min_score": 0.5})
    assert set(scores.filter(keep & train).to_list()) == {s for s, t in zip(scores, train) if t and s >= 0.5}
    with pytest.raises(ValueError, match="reward.filter"):
        keep_mask(scores, splits, ids, {"quantile": 0.2})


def test_metrics_against_hand_computed_values():
    scores, labels = [0.9, 0.8, 0.3, 0.6, 0.1], [1.0, 1.0, 1.0, 0.0, 0.0]
    m = binary_metrics(scores, labels, majority=1)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["majority_baseline"] == pytest.approx(3 / 5)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs are ordered right
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)


def test_histograms_share_bins_and_count_every_row():
    df = pl.DataFrame({"score": [0.0, 0.5, 1.0, 0.25], "source": ["a", "a", "b", "b"], "split": ["train"] * 4})
    out = histograms(df, "score", "sft")
    assert set(out) == {"sft_a_train", "sft_b_train"}
    assert sum(f["count"].sum() for f in out.values()) == 4
    assert out["sft_a_train"]["score"].equals(out["sft_b_train"]["score"])


def test_self_pairs_end_to_end(base, tmp_path):
    reward = tmp_path / "reward"
    model = build_model(base, "regression", None, seed=0)
    tokenizer = load_bundled_encoder_tokenizer()
    model.save_pretrained(reward)
    tokenizer.save_pretrained(reward)
    (reward / OBJECTIVE_FILE).write_text(json.dumps({"objective": "regression"}))
    chat = tmp_path / "base"
    materialize("tiny:llama", chat, seed=0)
    conversations = pl.DataFrame({
        "id": ["c1", "c2", "c3"], "source": ["chai"] * 3, "row": ["1", "2", "3"],
        "messages": [[{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": f"Question {i}?"},
                      {"role": "assistant", "content": f"Human answer {i}."}] for i in range(3)],
        "thumbs_up": [True] * 3, "split": ["train", "train", "eval"], "score": [0.5] * 3})
    settings = {"prompts": 5, "samples": 3, "max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
                "batch_size": 2, "seed": 0}
    scorer = Scorer(reward, max_length=64, batch_size=4)
    pairs = self_pairs(conversations, scorer, settings, chat)
    assert sorted(pairs["row"].to_list()) == ["1", "2"]  # eval prompts are never used
    for pair in pairs.to_dicts():
        i = int(pair["row"]) - 1
        assert pair["prompt"] == conversations["messages"].to_list()[i][:2] and pair["chosen"] == f"Human answer {i}."
        assert pair["source"] == "self:chai" and pair["split"] == "train" and pair["rejected"]
    again = self_pairs(conversations, scorer, settings, chat)
    assert again.equals(pairs)
    assert os.path.isdir(chat)


def test_one_class_eval_has_no_auc_and_an_empty_one_no_figures():
    assert binary_metrics([0.2, 0.9], [1.0, 1.0], majority=1)["roc_auc"] is None
    assert binary_metrics([], [], majority=1) == {"rows": 0}


def test_a_decoder_backbone_gets_a_pad_token(tmp_path):
    from ladder.data.models import load_bundled_chat_tokenizer
    chat = tmp_path / "llama"
    materialize("tiny:llama", chat, seed=0)
    tokenizer = left_truncating(load_bundled_chat_tokenizer())
    model = build_model(chat, "regression", None, seed=0, pad_token_id=tokenizer.pad_token_id).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert len(score_texts(model, tokenizer, GOOD + BAD, "regression", 32, 4)) == 8
