"""The judge: head, left truncation, swap TTA matched by id, quantized backbone, training, arena and preference
rows, and metrics overall and per source."""
from __future__ import annotations

import json
import random

import polars as pl
import pytest
import torch
from transformers import AutoTokenizer

from ladder.judge.classifier import (RepliesHead, build_judge, encode, encode_segments, head, judge_text, keep_last_tokens,
                          load_judge, prepare_tokenizer, save_judge)
from ladder.data.models import materialize, read_identity
from ladder.judge.classifier import train
from ladder.judge.rows import load_arena, load_rows, training_pairs
from ladder.evaluation.metrics import evaluate_judge

LORA_BERT = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}
LORA_LLAMA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
SETTINGS = {"max_length": 64, "field_budget": None, "head_dropout": 0.1, "ties": "drop", "quantization": "none"}


def rows(n: int = 12) -> list[dict]:
    rng = random.Random(0)
    words = ["light", "water", "heat", "patience", "shape", "rhythm", "balance", "timing"]
    return [{"id": f"r{i}", "prompt": f"Question {i} about {rng.choice(words)}?",
             "response_a": " ".join(rng.choices(words, k=rng.randint(1, 12))),
             "response_b": " ".join(rng.choices(words, k=rng.randint(1, 12))),
             "winner": rng.choice(["model_a", "model_b"]), "language": rng.choice(["English", "French", "unknown"])}
            for i in range(n)]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    materialize("tiny:bert", root / "bert", seed=0)
    materialize("tiny:llama", root / "llama", seed=0)
    return root


def trained_judge(backbones, tmp_path, kind: str, quantization: str = "none", head_kind: str = "cls", labels: int = 2):
    model = build_judge(backbones / kind, labels, 0.1, quantization, LORA_BERT if kind == "bert" else LORA_LLAMA, seed=0,
                        kind=head_kind)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(backbones / kind), model.decoder)
    settings = {**SETTINGS, "backbone": read_identity(backbones / kind), "labels": ["model_a", "model_b", "tie"][:labels],
                "quantization": quantization, "lora": LORA_BERT if kind == "bert" else LORA_LLAMA, "head": head_kind}
    torch.manual_seed(0)
    for module in model.head.modules():  # a head far from zero, so the two classes really differ
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=1.0)
    save_judge(model, tokenizer, settings, tmp_path / "judge")
    return load_judge(tmp_path / "judge", backbones / kind)


def test_head_shape_and_dropout():
    layers = list(head(32, 3, 0.25))
    assert [type(m).__name__ for m in layers] == ["Dropout", "Linear", "Dropout", "GELU", "Linear"]
    assert (layers[1].in_features, layers[1].out_features, layers[4].out_features) == (32, 16, 3)
    assert layers[0].p == layers[2].p == 0.25
    x = torch.randn(4, 32)
    module = head(32, 3, 0.5)
    module.train()
    assert not torch.equal(module(x), module(x))  # dropout is live in training
    module.eval()
    assert torch.equal(module(x), module(x))


def test_left_truncation_keeps_the_end(backbones):
    for kind, decoder in (("bert", False), ("llama", True)):
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(backbones / kind), decoder)
        text = " ".join(f"word{i}" for i in range(200)) + " THE END"
        (ids,) = encode([text], tokenizer, 24, decoder)
        assert len(ids) == 24
        decoded = tokenizer.decode(ids, skip_special_tokens=True).lower().replace(" ", "")
        assert decoded.endswith("theend") and "word0" not in decoded
        if decoder:
            assert ids[-1] == tokenizer.eos_token_id
    tokenizer = AutoTokenizer.from_pretrained(backbones / "bert")
    assert keep_last_tokens("one two three four five", tokenizer, 2) == "four five"
    long_a = "blah " * 500 + "end of a"
    text = judge_text("the prompt", long_a, "all of b", tokenizer, {"prompt": 8, "response": 16})
    assert text.endswith("<response_b>: all of b") and "end of a" in text and len(text) < 200


@pytest.mark.parametrize("kind,decoder", [("bert", False), ("llama", True)])
def test_segments_mark_each_reply_s_own_tokens(backbones, kind, decoder):
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(backbones / kind), decoder)
    fields = [("Tell me about the tower.", "*bows* Will you climb it with me?", "It is old."),
              ("Hi", "", "only b"), (" ".join(f"word{i}" for i in range(80)), "the end of a", "and b")]
    ids, segments = encode_segments(fields, tokenizer, 32, decoder)
    assert ids == encode([judge_text(*f) for f in fields], tokenizer, 32, decoder)  # the same tokens as the cls head's
    for (_, a, b), row, marks in zip(fields, ids, segments):
        assert len(row) == len(marks)
        for k, reply in ((1, a), (2, b)):
            picked = tokenizer.decode([t for t, m in zip(row, marks) if m == k]).replace(" ", "").lower()
            assert picked == reply.replace(" ", "").lower()
    assert 1 not in segments[1]  # an empty reply has no tokens; the long prompt was cut on the left, not the replies


def test_the_replies_head_mirrors_a_swap_exactly():
    torch.manual_seed(0)
    module = RepliesHead(64, 3, 0.1).eval()
    hidden = torch.randn(2, 10, 64)
    segments = torch.tensor([[0, 0, 1, 1, 1, 0, 2, 2, 0, 0], [0, 1, 0, 2, 2, 2, 2, 0, 0, 0]])
    logits = module(hidden, segments)
    swapped = module(hidden, torch.where(segments == 0, 0, 3 - segments))
    assert torch.allclose(swapped, logits[:, [1, 0, 2]], atol=1e-6)
    assert not torch.allclose(logits[:, 0], logits[:, 1])  # the two replies really score apart
    with pytest.raises(ValueError, match="cls or replies"):
        build_judge("unused", 2, 0.1, "none", None, seed=0, kind="pooled")


def test_text_is_fixed_by_ftfy_and_laid_out_as_the_winners_did():
    assert judge_text("caf\u00c3\u00a9?", "a", "b") == "<prompt>: caf\u00e9?\n\n<response_a>: a\n\n<response_b>: b"


@pytest.mark.parametrize("kind,head_kind", [("bert", "cls"), ("llama", "cls"), ("bert", "replies"), ("llama", "replies")])
def test_tta_is_symmetric_and_matched_by_id(backbones, tmp_path, kind, head_kind):
    judge = trained_judge(backbones, tmp_path, kind, head_kind=head_kind)
    assert judge.model.kind == head_kind
    data = rows()
    scored = judge.score(data, batch_size=4)
    swapped = judge.score([{**r, "response_a": r["response_b"], "response_b": r["response_a"]} for r in data])
    for r in data:
        assert abs(scored[r["id"]]["p_a"] - (1 - swapped[r["id"]]["p_a"])) < 1e-5
        assert abs(scored[r["id"]]["p_a"] + scored[r["id"]]["p_b"] - 1) < 1e-5
    assert max(abs(s["p_a_ab"] - s["p_a_ba"]) for s in scored.values()) > 1e-4  # the orders really differ
    shuffled = data[::-1]
    random.Random(1).shuffle(shuffled)
    for other in (judge.score(shuffled, batch_size=3), judge.score(data, batch_size=1)):
        assert other.keys() == scored.keys()
        assert all(abs(other[k]["p_a"] - scored[k]["p_a"]) < 1e-5 for k in scored)
    one = judge.score(data[5:6])[data[5]["id"]]
    assert abs(one["p_a"] - scored[data[5]["id"]]["p_a"]) < 1e-5
    with pytest.raises(ValueError, match="unique ids"):
        judge.score([data[0], data[0]])


@pytest.mark.parametrize("head_kind", ["cls", "replies"])
def test_training_changes_lora_and_head_not_the_backbone(backbones, tmp_path, monkeypatch, head_kind):
    monkeypatch.chdir(tmp_path)
    model = build_judge(backbones / "bert", 2, 0.1, "none", LORA_BERT, seed=0, kind=head_kind)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(backbones / "bert"), False)
    before = {k: v.clone() for k, v in model.named_parameters()}
    params = {**SETTINGS, "lora": LORA_BERT, "swap_augment": True, "seed": 0,
              "trainer": {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-2}}
    figures = train(model, tokenizer, training_pairs(rows(), ["model_a", "model_b"], True), params,
                    {"cuda": False, "bf16": False})
    after = dict(model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("lora_" in k for k in changed) and any(k.startswith("head.") for k in changed)
    assert not any("lora_" not in k and not k.startswith("head.") for k in changed)
    assert figures["train_loss"] > 0 and (tmp_path / "dvclive/classifier/metrics.json").is_file()


def test_int8_backbone_trains_through_lora_and_loads_back(backbones, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    monkeypatch.chdir(tmp_path)
    model = build_judge(backbones / "llama", 2, 0.1, "int8", LORA_LLAMA, seed=0)
    assert isinstance(model.backbone.base_model.model.layers[0].mlp.down_proj.base_layer, bnb.nn.Linear8bitLt)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(backbones / "llama"), True)
    quantized = {k: v.clone() for k, v in model.named_parameters() if v.dtype == torch.int8}
    lora = {k: v.clone() for k, v in model.named_parameters() if "lora_B" in k}
    params = {**SETTINGS, "quantization": "int8", "lora": LORA_LLAMA, "swap_augment": False, "seed": 0,
              "trainer": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2}}
    train(model, tokenizer, training_pairs(rows(), ["model_a", "model_b"], False), params, {"cuda": False, "bf16": False})
    after = dict(model.named_parameters())
    assert quantized and all(torch.equal(v, after[k]) for k, v in quantized.items())
    assert any(not torch.equal(v, after[k]) for k, v in lora.items())
    settings = {**SETTINGS, "backbone": read_identity(backbones / "llama"), "labels": ["model_a", "model_b"],
                "quantization": "int8", "lora": LORA_LLAMA}
    save_judge(model, tokenizer, settings, tmp_path / "judge")
    judge = load_judge(tmp_path / "judge", backbones / "llama")
    assert isinstance(judge.model.backbone.base_model.model.layers[0].mlp.down_proj.base_layer, bnb.nn.Linear8bitLt)
    scored = judge.score(rows(4))
    assert len(scored) == 4 and all(0 <= s["p_a"] <= 1 for s in scored.values())
    with pytest.raises(ValueError, match="LoRA only"):
        build_judge(backbones / "llama", 2, 0.1, "int8", None, seed=0)


def test_a_backbone_nf4_cannot_take_on_every_cpu_is_refused_before_loading(tmp_path):
    from ladder.data.models import tiny_model

    narrow, tokenizer = tiny_model("llama", seed=0, hidden_size=48, intermediate_size=96, num_attention_heads=2,
                                   num_key_value_heads=1)  # in_features 48: not whole 64-value blocks
    narrow.save_pretrained(tmp_path / "narrow")
    tokenizer.save_pretrained(tmp_path / "narrow")
    with pytest.raises(ValueError, match=r"cannot be quantized to nf4: layers\.0\.self_attn\.q_proj \(in 48"):
        build_judge(tmp_path / "narrow", 2, 0.1, "nf4", LORA_LLAMA, seed=0)


def test_the_judge_names_its_backbone_and_refuses_another(backbones, tmp_path):
    trained_judge(backbones, tmp_path, "bert")
    saved = (tmp_path / "judge/judge.json").read_text()
    assert str(backbones) not in saved  # by id and revision, not by a path of this machine
    assert read_identity(backbones / "bert") == {"model": "tiny:bert", "revision": None, "seed": 0}
    materialize("tiny:bert", tmp_path / "other", seed=1)  # same architecture, other weights
    with pytest.raises(ValueError, match="trained on backbone"):
        load_judge(tmp_path / "judge", tmp_path / "other")


def test_arena_loading_pairs_and_ties(tmp_path):
    data = rows(6) + [{**rows(1)[0], "id": "tie1", "winner": "tie"}]
    df = pl.DataFrame([{**r, "split": "train" if i % 2 else "eval", "language": None if i == 0 else r["language"]}
                       for i, r in enumerate(data)])
    df.write_parquet(tmp_path / "arena.parquet")
    dropped = load_arena(tmp_path / "arena.parquet", "drop")
    kept = load_arena(tmp_path / "arena.parquet", "class")
    assert sum(map(len, dropped.values())) == 6 and sum(map(len, kept.values())) == 7
    assert all(r["language"] for split in kept.values() for r in split)  # null language -> "unknown"
    pairs = training_pairs(kept["train"] + kept["eval"], ["model_a", "model_b", "tie"], swap=True)
    assert len(pairs) == 14
    first, flipped = pairs[0], pairs[7]
    assert (flipped[1], flipped[2]) == (first[2], first[1])
    assert {first[3], flipped[3]} == {0, 1} or first[3] == flipped[3] == 2
    df.drop("winner").write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="winner"):
        load_arena(tmp_path / "bad.parquet", "drop")
    with pytest.raises(ValueError, match="maybe"):
        load_arena(tmp_path / "arena.parquet", "maybe")


def preference_table(path, n: int = 24):
    pl.DataFrame([{"id": f"p{i:02d}", "source": "chai_dpo", "row": str(i),
                   "prompt": [{"role": "assistant", "content": "*waves* Hi."}, {"role": "user", "content": f"Hello {i}"}],
                   "chosen": f"*smiles* Hello {i} to you, friend.", "rejected": "ok", "split": "eval" if i % 3 == 0 else "train"}
                  for i in range(n)]).write_parquet(path)


def test_rows_from_the_arena_and_the_judge_s_share_of_preferences(tmp_path):
    arena = pl.DataFrame([{**r, "split": "train" if i % 2 else "eval"} for i, r in enumerate(rows(8))])
    arena.write_parquet(tmp_path / "arena.parquet")
    preference_table(tmp_path / "preferences.parquet")
    only_arena, ties = load_rows(tmp_path / "arena.parquet", tmp_path / "absent.parquet", "drop", 0)
    assert ties == 0 and {r["table"] for split in only_arena.values() for r in split} == {"arena"}
    assert sum(map(len, only_arena.values())) == 8  # share 0 never reads the preferences file
    both, _ = load_rows(tmp_path / "arena.parquet", tmp_path / "preferences.parquet", "drop", 1.0)
    for split, data in both.items():
        assert [r["id"] for r in data] == sorted(r["id"] for r in data)
        assert sum(r["table"] == "preferences" for r in data) == sum((i % 3 == 0) == (split == "eval") for i in range(24))
    half, _ = load_rows(tmp_path / "arena.parquet", tmp_path / "preferences.parquet", "drop", 0.5)
    assert 0 < sum(r["table"] == "preferences" for split in half.values() for r in split) < 24
    with pytest.raises(ValueError, match="absent.parquet: file not found"):
        load_rows(tmp_path / "arena.parquet", tmp_path / "absent.parquet", "drop", 0.5)
    with pytest.raises(ValueError, match="preference_share"):
        load_rows(tmp_path / "arena.parquet", tmp_path / "preferences.parquet", "drop", 2)


def test_rejected_replies_of_one_turn_are_a_tie_only_for_a_three_label_judge(tmp_path):
    pl.DataFrame([r for r in rows(4)]).with_columns(pl.lit("train").alias("split")).write_parquet(
        tmp_path / "arena.parquet")
    pl.DataFrame([{"id": f"p{i:02d}{k}", "source": "chai_dpo", "row": str(i),
                   "prompt": [{"role": "user", "content": f"Hello {i}"}], "chosen": f"*smiles* Hello {i}, friend.",
                   "rejected": f"no {k}", "split": "train"} for i in range(6) for k in range(2)]).write_parquet(
        tmp_path / "preferences.parquet")
    args = (tmp_path / "arena.parquet", tmp_path / "preferences.parquet")
    three, _ = load_rows(*args, "class", 1.0, rejected_ties=True)
    ties = [r for r in three["train"] if r["table"] == "preferences" and r["winner"] == "tie"]
    assert len(ties) == 6 and all({r["response_a"], r["response_b"]} == {"no 0", "no 1"} for r in ties)
    two, _ = load_rows(*args, "drop", 1.0, rejected_ties=True)  # a two-label judge has no tie to learn
    assert not [r for r in two["train"] if r["winner"] == "tie"]
    assert len(two["train"]) == len(three["train"]) - 6 - sum(r["winner"] == "tie" for r in rows(4))
    off, _ = load_rows(*args, "class", 1.0)
    assert not [r for r in off["train"] if r["table"] == "preferences" and r["winner"] == "tie"]


def test_identical_pairs_are_labelled_both_ways_or_as_a_tie():
    data = rows(40)
    plain = training_pairs(data, ["model_a", "model_b"], True)
    some = training_pairs(data, ["model_a", "model_b"], True, identical=0.5)
    extra = some[len(plain):]
    assert some[:len(plain)] == plain and 0 < len(extra) < 80 and len(extra) % 2 == 0
    for first, second in zip(extra[::2], extra[1::2]):
        assert first[1] == first[2] == second[1] == second[2] and (first[3], second[3]) == (0, 1)
    assert training_pairs(data, ["model_a", "model_b"], True, identical=0.5) == some  # fixed by the row ids
    assert len(training_pairs(data, ["model_a", "model_b"], True, identical=1.0)) == 80 + 80
    each = training_pairs(data, ["model_a", "model_b", "tie"], False, identical=1.0)[40:]
    assert len(each) == 80 and [label for *_, label in each] == [0, 1] * 40  # three labels, a win for each side
    ties = training_pairs(data, ["model_a", "model_b", "tie"], False, identical=1.0, identical_label="tie")[40:]
    assert len(ties) == 40 and {label for *_, label in ties} == {2}
    assert training_pairs(data, ["model_a", "model_b"], True, identical=0.5, identical_label="tie") == some  # no tie
    with pytest.raises(ValueError, match="identical_label must be each or tie, not 'both'"):
        training_pairs(data, ["model_a", "model_b", "tie"], True, identical_label="both")


def test_metrics_per_source():
    data = [{"id": "a", "winner": "model_a", "language": "en", "table": "arena"},
            {"id": "b", "winner": "model_b", "language": "en", "table": "arena"},
            {"id": "p", "winner": "model_a", "language": "unknown", "table": "preferences"},
            {"id": "q", "winner": "model_b", "language": "unknown", "table": "preferences"}]
    scored = {"a": {"p_a": 0.8, "p_b": 0.2, "p_a_ab": 0.9, "p_a_ba": 0.7},
              "b": {"p_a": 0.3, "p_b": 0.7, "p_a_ab": 0.4, "p_a_ba": 0.2},
              "p": {"p_a": 0.4, "p_b": 0.6, "p_a_ab": 0.7, "p_a_ba": 0.1},   # wrong with TTA, flips
              "q": {"p_a": 0.3, "p_b": 0.7, "p_a_ab": 0.3, "p_a_ba": 0.3}}
    metrics, _ = evaluate_judge(scored, data, ["model_a", "model_b"], "model_a")
    arena, prefs = metrics["by_source"]["arena"], metrics["by_source"]["preferences"]
    assert (arena["rows"], arena["accuracy_tta"], arena["position_flip_rate"]) == (2, 1.0, 0.0)
    assert (prefs["rows"], prefs["accuracy_tta"], prefs["position_flip_rate"]) == (2, 0.5, 0.5)
    assert metrics["accuracy_tta"] == 0.75 and metrics["eval_rows"] == 4
    assert prefs["first_position_preference"] == pytest.approx(((0.7 + 0.9) / 2 + (0.3 + 0.7) / 2) / 2)
    assert arena["log_loss_tta"] < prefs["log_loss_tta"] and "accuracy_one_order" in prefs
    assert metrics["accuracy_by_language"] == {"en": 1.0}  # the preferences table records no language


def test_the_stage_writes_figures_per_source(backbones, tmp_path, monkeypatch, write_params):
    from click.testing import CliRunner

    from stages.classifier import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/clean").mkdir(parents=True)
    pl.DataFrame([{**r, "split": "train" if i % 3 else "eval"} for i, r in enumerate(rows(18))]).write_parquet(
        "data/clean/arena.parquet")
    preference_table(tmp_path / "data/clean/preferences.parquet")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/judge_base").symlink_to(backbones / "bert")
    params = {"classifier": {**SETTINGS, "preference_share": 1.0, "lora": LORA_BERT, "swap_augment": True,
                             "seed": 0, "eval_batch_size": 8, "launcher": "python",
                             "cpu_bf16": "on",  # the CPU autocast path, on any CPU (emulated where not native)
                             "trainer": {"max_steps": 2, "per_device_train_batch_size": 4}}}
    write_params(tmp_path / "params.yaml", params)
    result = CliRunner().invoke(main, [], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics/judge.json").read_text())
    assert metrics["train_rows_by_source"] == {"arena": 12, "preferences": 16} and metrics["train_rows"] == 28
    assert {k: v["rows"] for k, v in metrics["by_source"].items()} == {"arena": 6, "preferences": 8}
    assert metrics["eval_rows"] == 14 and metrics["preference_ties_dropped"] == 0
    assert metrics["train_rejected_ties"] == 0  # one rejected reply per source row: nothing to pair
    for key in ("accuracy_tta", "majority_baseline", "position_flip_rate", "first_position_preference"):
        assert 0 <= metrics[key] <= 1 and all(0 <= v[key] <= 1 for v in metrics["by_source"].values())


def test_metrics_from_known_scores():
    data = [{"id": "a", "winner": "model_a", "language": "en"}, {"id": "b", "winner": "model_b", "language": "en"},
            {"id": "c", "winner": "model_a", "language": "fr"}, {"id": "d", "winner": "model_a", "language": "fr"}]
    scored = {"a": {"p_a": 0.8, "p_b": 0.2, "p_a_ab": 0.9, "p_a_ba": 0.7},   # right both ways
              "b": {"p_a": 0.3, "p_b": 0.7, "p_a_ab": 0.6, "p_a_ba": 0.0},   # one order wrong, flips
              "c": {"p_a": 0.4, "p_b": 0.6, "p_a_ab": 0.45, "p_a_ba": 0.35},  # wrong
              "d": {"p_a": 0.6, "p_b": 0.4, "p_a_ab": 0.4, "p_a_ba": 0.8}}   # TTA right, one order wrong, flips
    metrics, plots = evaluate_judge(scored, data, ["model_a", "model_b"], "model_b")
    assert metrics["accuracy_tta"] == 0.75 and metrics["accuracy_one_order"] == 0.25
    assert metrics["majority_baseline"] == 0.25 and metrics["position_flip_rate"] == 0.5
    assert metrics["accuracy_by_language"] == {"en": 1.0, "fr": 0.5}
    assert metrics["log_loss_tta"] < metrics["log_loss_one_order"]
    assert sum(b["rows"] for b in plots["calibration"]) == 4
    assert plots["confusion"][2] == {"actual": "model_a", "predicted": "model_b"}


def test_lora_on_the_top_layers_only_stops_backpropagation_below_them(backbones):
    model = build_judge(backbones / "bert", 2, 0.1, "none", {**LORA_BERT, "layers": 1}, seed=0)
    blocks = model.backbone.config.num_hidden_layers
    trainable = [k for k, v in model.named_parameters() if v.requires_grad]
    assert blocks > 1 and any("lora_" in k for k in trainable)
    assert all(k.startswith("head.") or f"layer.{blocks - 1}." in k for k in trainable)
    reached = []
    lower = model.backbone.base_model.model.encoder.layer[blocks - 2]
    lower.register_full_backward_hook(lambda *_: reached.append(True))
    ids = torch.randint(5, 100, (2, 12))
    model(ids, torch.ones_like(ids), torch.tensor([0, 1])).loss.backward()
    assert not reached  # nothing below the adapted block needs a gradient
    whole = build_judge(backbones / "bert", 2, 0.1, "none", LORA_BERT, seed=0)
    assert any("layer.0." in k for k, v in whole.named_parameters() if v.requires_grad)


def test_the_seed_fixes_every_initial_weight(backbones):
    first, second = (dict(build_judge(backbones / "bert", 2, 0.1, "none", LORA_BERT, seed=7).named_parameters())
                     for _ in range(2))
    other = dict(build_judge(backbones / "bert", 2, 0.1, "none", LORA_BERT, seed=8).named_parameters())
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["head.1.weight"], other["head.1.weight"])
    lora_a = next(k for k in first if "lora_A" in k)
    assert not torch.equal(first[lora_a], other[lora_a])


def moved_share(model, steps: int = 1, lr: float = 7e-5) -> float:
    """The share of the encoder blocks' weights that `steps` AdamW steps at the default judge rate change."""
    ids = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    blocks = {n: p for n, p in model.backbone.named_parameters() if ".layer." in n and n.endswith("weight")}
    before = {n: p.detach().clone() for n, p in blocks.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, torch.ones_like(ids), torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in blocks.items())
    return changed / sum(p.numel() for p in blocks.values())


def test_a_judge_trained_whole_keeps_float32_weights_where_bf16_is_asked(backbones):
    # On a GPU the stage asks for bf16 (hw["bf16"]): the trainer's autocast computes in it, the weights it
    # updates stay float32. Stored in bf16, a step of lr 7e-5 is lost on every weight above ~0.03 in size.
    whole = build_judge(backbones / "bert", 2, 0.1, "none", None, seed=0, bf16=True)
    assert {p.dtype for p in whole.backbone.parameters()} == {torch.float32}
    assert moved_share(whole) == 1.0
    rounded_away = build_judge(backbones / "bert", 2, 0.1, "none", None, seed=0).to(torch.bfloat16)
    rounded_away.head.float()  # as PairJudge computes its head
    assert moved_share(rounded_away) < 0.95  # not vacuous: this is what bf16 weights did
    # Under LoRA only the adapter trains: the frozen backbone may stay bf16, the adapter is float32.
    adapted = build_judge(backbones / "bert", 2, 0.1, "none", LORA_BERT, seed=0, bf16=True)
    dtypes = {("lora_" in n, p.dtype) for n, p in adapted.backbone.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
