"""The judge's share of the preference pairs: a stable split by source row, held out of DPO's training by the
score stage, laid out as inference lays out the judge's rows; the WSDM recipe stays arena-only."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from ladder.data.holdout import in_judge_share, judge_rows, judge_share_mask
from ladder.data.models import load_bundled_encoder_tokenizer, materialize
from ladder.params import load_params
from ladder.tools.recipes import apply
from ladder.data.records import SCHEMAS, stable_id
from ladder.training.reward_model import OBJECTIVE_FILE, role_lines

REPO = Path(__file__).resolve().parents[1]


def preferences(n_rows: int = 300, per_row: int = 3, seed: int = 0) -> pl.DataFrame:
    """`per_row` pairs per source row (as chai-dpo has one per rejected reply), two sources, both splits."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n_rows):
        source = "chai_dpo" if i % 3 else "chai"
        prompt = [{"role": "assistant", "content": f"*waves* I am bot {i}."},
                  {"role": "user", "content": f"Tell me about the tower {rng.randint(0, 99)}."}]
        split = "eval" if i % 5 == 0 else "train"
        for k in range(per_row):
            pairs.append({"id": stable_id(source, i, k), "source": source, "row": str(i), "prompt": prompt,
                          "chosen": f"*bows* The tower {i} is old, friend.", "rejected": f"no {k}", "split": split})
    return pl.DataFrame(pairs, schema={**SCHEMAS["preferences"], "split": pl.String})


def test_the_share_is_stable_whole_source_rows_and_near_its_size():
    pairs = preferences()
    mask = judge_share_mask(pairs, 0.5)
    shuffled = pairs.sample(fraction=1.0, shuffle=True, seed=3)
    again = dict(zip(shuffled["id"], judge_share_mask(shuffled, 0.5)))
    assert all(again[i] == m for i, m in zip(pairs["id"], mask))  # a function of the row, not of its position
    by_row = pairs.with_columns(mask).group_by("source", "row").agg(pl.col("judge").n_unique())
    assert by_row["judge"].max() == 1  # the pairs of one source row are never split between judge and DPO
    rows = pairs.select("source", "row").unique()
    share = sum(in_judge_share(s, r, 0.5) for s, r in rows.iter_rows()) / rows.height
    assert 0.4 < share < 0.6  # 300 rows: four standard deviations
    # a larger share only adds rows: raising it never moves a pair from the judge to DPO
    assert not (mask & ~judge_share_mask(pairs, 0.7)).any()
    assert not judge_share_mask(pairs, 0).any() and judge_share_mask(pairs, 1).all()
    assert judge_share_mask(pairs, 1).dtype == pl.Boolean
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="preference_share"):
            judge_share_mask(pairs, bad)


def test_judge_rows_are_balanced_hold_the_chosen_reply_as_winner_and_drop_ties():
    pairs = preferences(n_rows=400, per_row=3)
    tie = pairs.head(1).with_columns(pl.lit("same reply").alias("chosen"), pl.lit(" same reply").alias("rejected"),
                                     pl.lit("tie-pair").alias("id"))
    rows, ties = judge_rows(pl.concat([pairs, tie]), 1.0)
    assert ties == 1 and len(rows) == pairs.height and "tie-pair" not in {r["id"] for r in rows}
    chosen = dict(zip(pairs["id"], pairs["chosen"]))
    for r in rows:
        winner = r["response_a"] if r["winner"] == "model_a" else r["response_b"]
        assert winner == chosen[r["id"]] and r["table"] == "preferences" and r["language"] == "unknown"
    first = sum(r["winner"] == "model_a" for r in rows) / len(rows)
    assert 0.45 < first < 0.55  # 1,200 pairs: the chosen reply is first about half the time
    assert rows == judge_rows(pairs.reverse(), 1.0)[0]  # order and layout fixed by the hash, rows in id order
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    with pytest.raises(ValueError, match="rejected"):
        judge_rows(pairs.drop("rejected"), 0.5)


def test_replies_rejected_in_one_turn_make_tie_rows_only_when_asked():
    pairs = preferences(n_rows=30, per_row=3)
    plain, _ = judge_rows(pairs, 1.0)
    rows, _ = judge_rows(pairs, 1.0, rejected_ties=True)
    ties = [r for r in rows if r["winner"] == "tie"]
    assert not [r for r in plain if r["winner"] == "tie"]
    assert len(ties) == 30 * 2  # k - 1 rows for the k rejected replies of a turn, in id order
    assert [r for r in rows if r["winner"] != "tie"] == plain
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    by_id = {p["id"]: p for p in pairs.iter_rows(named=True)}
    for tie in ties:
        first, second = (by_id[i] for i in tie["id"].split("+"))
        assert (first["source"], first["row"], first["split"]) == (second["source"], second["row"], tie["split"])
        assert {tie["response_a"], tie["response_b"]} == {first["rejected"], second["rejected"]}
        assert tie["prompt"] == role_lines(first["prompt"]) and tie["table"] == "preferences"
    # swipes of two turns of one conversation (one source row) are never put together
    turns = pl.DataFrame([{"id": f"t{k}", "source": "chai", "row": "c1", "split": "train",
                           "prompt": [{"role": "user", "content": f"turn {j}"} for j in range(1 + 2 * (k // 2))],
                           "chosen": f"kept {k // 2}", "rejected": f"swiped {k}"} for k in range(4)],
                         schema={**SCHEMAS["preferences"], "split": pl.String})
    tied = [r for r in judge_rows(turns, 1.0, rejected_ties=True)[0] if r["winner"] == "tie"]
    assert sorted((r["response_a"], r["response_b"]) for r in tied) == [("swiped 0", "swiped 1"), ("swiped 2", "swiped 3")]
    # two rejected replies alike hold nothing to call even; a lone rejected reply has no partner
    alike = pairs.with_columns(pl.lit("no").alias("rejected"))
    assert not [r for r in judge_rows(alike, 1.0, rejected_ties=True)[0] if r["winner"] == "tie"]
    assert not [r for r in judge_rows(preferences(n_rows=30, per_row=1), 1.0, rejected_ties=True)[0]
                if r["winner"] == "tie"]


def test_the_prompt_field_is_what_inference_gives_the_judge():
    from ladder.evaluation.controls import pairwise

    pairs = preferences(n_rows=5, per_row=1)
    system = [{"role": "system", "content": "You are Vex, a rogue AI.\nStay in character."}]
    pairs = pairs.with_columns(pl.Series("prompt", [system + p for p in pairs["prompt"].to_list()]))
    rows, _ = judge_rows(pairs, 1.0)
    for row in rows:
        messages = pairs.filter(pl.col("id") == row["id"])["prompt"].to_list()[0]
        [judged] = pairwise({"x": ["one"], "y": ["two"]}, [{"prompt_id": "p", "messages": messages}])
        assert row["prompt"] == judged["prompt"] == role_lines(messages)
        assert row["prompt"].startswith("system: You are Vex") and "\nassistant: *waves*" in row["prompt"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The score stage run on a tiny reward model with the judge holding half the pairs' source rows."""
    from ladder.training.reward_model import build_model

    root = tmp_path_factory.mktemp("score")
    materialize("tiny:bert", root / "reward_base", seed=0)
    model = build_model(root / "reward_base", "regression", None, seed=0)
    model.save_pretrained(root / "models/reward")
    load_bundled_encoder_tokenizer().save_pretrained(root / "models/reward")
    (root / "models/reward" / OBJECTIVE_FILE).write_text(json.dumps({"objective": "regression"}))
    (root / "data/clean").mkdir(parents=True)
    pairs = preferences(n_rows=60, per_row=2)
    pairs.write_parquet(root / "data/clean/preferences.parquet")
    pl.DataFrame([{"id": f"c{i}", "source": "chai", "row": str(i), "messages": [
        {"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}],
        "thumbs_up": True, "split": "eval" if i % 4 == 0 else "train"} for i in range(8)],
        schema={**SCHEMAS["conversations"], "split": pl.String}).write_parquet(root / "data/clean/conversations.parquet")
    params = {"reward": {"filter": {"keep_top": 1.0}, "min_margin": -1.0e9, "self_pairs": {"enabled": False},
                         "max_length": 32, "score_batch_size": 16},
              "sft": {"chat_template": "base"}, "classifier": {"preference_share": 0.5}}
    return root, pairs, params


def run_score(root: Path, params: dict, monkeypatch, write_params) -> tuple[pl.DataFrame, dict]:
    from stages.score import main

    monkeypatch.chdir(root)
    write_params(root / "params.yaml", params)
    result = CliRunner().invoke(main, [], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return pl.read_parquet(root / "data/scored/dpo.parquet"), json.loads((root / "metrics/score.json").read_text())


def test_the_judge_share_never_reaches_dpo_training(scored, monkeypatch, write_params):
    from ladder.judge.rows import load_rows

    root, pairs, params = scored
    dpo, metrics = run_score(root, params, monkeypatch, write_params)
    arena = pl.DataFrame([{"id": "a1", "source": "wsdm", "row": "1", "prompt": "q", "response_a": "x",
                           "response_b": "y", "winner": "model_a", "language": None, "split": "train"}])
    arena.write_parquet(root / "data/clean/arena.parquet")
    data, _ = load_rows(root / "data/clean/arena.parquet", root / "data/clean/preferences.parquet", "drop", 0.5)
    judged = {r["id"] for split in data.values() for r in split if r["table"] == "preferences"}
    dpo_train = set(dpo.filter(pl.col("split") == "train")["id"])
    train = set(pairs.filter(pl.col("split") == "train")["id"])
    assert judged and dpo_train and not judged & dpo_train
    assert dpo_train | (judged & train) == train  # nothing else is lost
    assert set(dpo.filter(pl.col("split") == "eval")["id"]) == set(pairs.filter(pl.col("split") == "eval")["id"])
    assert metrics["dpo_held_out_for_judge"] == len(judged & train) and metrics["preference_share"] == 0.5
    assert metrics["dpo"]["train"]["scored"] == len(dpo_train)


@pytest.mark.parametrize("share", [0, 1])
def test_share_zero_holds_nothing_out_and_one_holds_every_train_pair(scored, monkeypatch, share, write_params):
    root, pairs, params = scored
    dpo, metrics = run_score(root, {**params, "classifier": {"preference_share": share}}, monkeypatch,
                             write_params)
    train = pairs.filter(pl.col("split") == "train").height
    assert metrics["dpo_held_out_for_judge"] == (train if share else 0)
    assert dpo.filter(pl.col("split") == "train").height == (0 if share else train)


def test_self_pairs_from_the_judge_s_rows_are_held_out_too():
    from ladder.data.holdout import judge_holdout

    pairs = preferences(n_rows=40, per_row=1)
    extra = pairs.with_columns(("self:" + pl.col("source")).alias("source"), pl.lit("train").alias("split"),
                               ("self-" + pl.col("id")).alias("id"))
    unrelated = extra.with_columns(pl.lit("self:gpt_realm").alias("source"))
    held = judge_holdout(pairs, pl.concat([extra, unrelated]), 0.5).to_list()
    mine, theirs, other = held[:40], held[40:80], held[80:]
    in_share = judge_share_mask(pairs, 0.5).to_list()
    assert mine == [j and s == "train" for j, s in zip(in_share, pairs["split"])]
    assert theirs == in_share and any(theirs) and not any(other)


def test_the_wsdm_recipe_keeps_the_judge_on_the_arena(tmp_path):
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml")["classifier"]["preference_share"] > 0
    apply(REPO / "recipes/wsdm.yaml", tmp_path / "params.yaml")
    judge = load_params(tmp_path / "params.yaml")["classifier"]
    assert judge["preference_share"] == 0 and judge["lora"]["layers"] is None  # every block of gemma-2-9b
