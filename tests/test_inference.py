"""Inference: held-out prompts, backend choice, best-of-n by the reward model, every pair judged once."""
from __future__ import annotations

import polars as pl
import pytest

from ladder.evaluation.controls import held_out_prompts
from ladder.evaluation.generation import sample_replies
from ladder.data.models import tiny_model
from ladder.evaluation.chat_models import choose_backend, load_chat_model
from ladder.evaluation.controls import pairwise
from ladder.training.reward_model import best_replies

CPU = {"cuda": False, "bf16": False, "flash_attn": False, "device": "cpu"}
GPU = {"cuda": True, "bf16": True, "flash_attn": False, "device": "test"}


def conversation(i: int, turns: int) -> list[dict]:
    messages = [{"role": "system", "content": f"persona {i}"}]
    for t in range(turns):
        messages += [{"role": "user", "content": f"u{i}.{t}"}, {"role": "assistant", "content": f"a{i}.{t}"}]
    return messages


def test_prompts_are_eval_conversations_cut_before_their_last_reply(tmp_path):
    rows = [{"id": f"{i:02d}", "source": "s", "messages": conversation(i, 1 + i % 3), "thumbs_up": None,
             "split": "eval" if i % 4 else "train"} for i in range(20)]
    rows.append({"id": "99", "source": "s", "messages": [{"role": "assistant", "content": "greeting only"}],
                 "thumbs_up": None, "split": "eval"})
    pl.DataFrame(rows).write_parquet(tmp_path / "c.parquet")
    prompts = held_out_prompts(tmp_path / "c.parquet", 6, seed=0)
    assert len(prompts) == 6 and [p["prompt_id"] for p in prompts] == sorted(p["prompt_id"] for p in prompts)
    for p in prompts:
        i = int(p["prompt_id"])
        assert i % 4 and p["messages"] == conversation(i, 1 + i % 3)[:-1] and p["messages"][-1]["role"] == "user"
        assert p["reference"] == f"a{i}.{i % 3}" and p["source"] == "s"
    assert prompts == held_out_prompts(tmp_path / "c.parquet", 6, seed=0)
    assert prompts != held_out_prompts(tmp_path / "c.parquet", 6, seed=1)
    assert len(held_out_prompts(tmp_path / "c.parquet", 100, seed=0)) == 15  # the greeting-only row is no prompt
    pl.DataFrame(rows).drop("split").write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="split"):
        held_out_prompts(tmp_path / "bad.parquet", 3, seed=0)


def test_backend_choice(monkeypatch):
    import ladder.evaluation.chat_models

    monkeypatch.setattr(ladder.evaluation.chat_models, "vllm_installed", lambda: True)
    assert choose_backend("vllm", "merged", CPU) == "hf"  # no GPU
    assert choose_backend("vllm", "merged", GPU) == "vllm"
    assert choose_backend("vllm", "int8", GPU) == "hf"  # bitsandbytes folders go through transformers
    assert choose_backend("hf", "merged", GPU) == "hf"
    monkeypatch.setattr(ladder.evaluation.chat_models, "vllm_installed", lambda: False)
    assert choose_backend("vllm", "merged", GPU) == "hf"  # not installed
    with pytest.raises(ValueError, match="tgi"):
        choose_backend("tgi", "merged", CPU)
    with pytest.raises(ValueError, match="gpt5"):
        load_chat_model("gpt5", CPU)


def test_best_of_n_keeps_the_reply_the_reward_model_prefers():
    class LengthScorer:  # a stand-in reward model: longer is better
        def score_conversations(self, conversations):
            return [float(len(c[-1]["content"])) for c in conversations]

    prompts = [conversation(0, 1)[:-1], conversation(1, 1)[:-1]]
    replies, scores = best_replies([["ab", "abcd", "a"], ["xyz", "xy", "xyz"]], prompts, LengthScorer())
    assert replies == ["abcd", "xyz"] and scores == [4.0, 3.0]


def test_every_pair_of_models_is_judged_once_per_prompt():
    prompts = [{"prompt_id": f"p{i}", "messages": conversation(i, 1)[:-1]} for i in range(3)]
    responses = {m: [f"{m} reply {i}" for i in range(3)] for m in ("base", "sft", "merged", "int8")}
    rows = pairwise(responses, prompts)
    assert len(rows) == 3 * 6 and len({r["id"] for r in rows}) == len(rows)
    row = next(r for r in rows if r["prompt_id"] == "p1" and r["model_a"] == "sft" and r["model_b"] == "int8")
    assert row["response_a"] == "sft reply 1" and row["response_b"] == "int8 reply 1"
    assert row["prompt"].endswith("user: u1.0")


def test_sampling_is_seeded_stops_at_stop_strings_and_counts_tokens():
    model, tokenizer = tiny_model("llama", seed=0)
    prompts = [conversation(0, 1)[:-1], conversation(1, 2)[:-1]]
    sampling = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    counts: dict = {}
    first = sample_replies(model, tokenizer, prompts, 2, sampling, seed=3, counts=counts)
    assert [len(r) for r in first] == [2, 2] and 0 < counts["tokens"] <= 2 * 2 * 6
    assert first == sample_replies(model, tokenizer, prompts, 2, sampling, seed=3)
    letter = next(c for c in "".join(first[0]) if c.isalpha())  # a character the model does produce
    cut = sample_replies(model, tokenizer, prompts, 2, {**sampling, "stop": [letter]}, seed=3)
    assert all(letter not in reply for replies in cut for reply in replies)
