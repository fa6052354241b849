"""The clean stage's own work: filters, dedup across sources, the eval split, the mix, the metrics."""
from __future__ import annotations

import polars as pl
import pytest

from ladder.data.cleaning import clean, reason_kind

U = "Anonymous user"
BASE = {"seed": 0, "eval_fraction": 0.0, "min_turns": 3, "min_message_chars": 1, "max_message_chars": 100,
        "min_conversation_chars": 5, "max_conversation_chars": 1000, "sft_requires_thumbs_up": True,
        "swipe_pairs": True, "arena_languages": [], "dedup": True, "mix": {}}


def chai(rows):
    return ("chai_feedback", pl.DataFrame({
        "_id": [r[0] for r in rows],
        "conversation": [[{"name": n, "text": t} for n, t in r[1]] for r in rows],
        "thumbs_up": [r[2] for r in rows]}))


def roleplay(conversations):
    return ("messages", pl.DataFrame({"messages": [[{"role": r, "content": c} for r, c in conv]
                                                    for conv in conversations]}))


def talk(i, reply="Sure thing, friend."):
    return [("Bot", "Hello there."), (U, f"Question number {i}?"), ("Bot", reply)]


def test_filters_drop_records_with_reasons_and_keep_feedback():
    raw = {"chai": chai([("short", [("Bot", "Hi"), (U, "Yo")], True),
                         ("long", talk(1, "x" * 101), True),
                         ("down", talk(2), False),
                         ("up", talk(3), True)])}
    tables, metrics, _ = clean(raw, BASE)
    assert tables["conversations"]["row"].to_list() == ["up"]
    # A thumbs-down conversation is no SFT data but is still feedback: the row is used, not rejected.
    assert sorted(tables["feedback"]["row"].to_list()) == ["down", "up"]
    reasons = dict(zip(tables["rejects"]["row"], tables["rejects"]["reason"]))
    assert reasons == {"short": "fewer than 3 messages (clean.min_turns)",
                       "long": "message longer than clean.max_message_chars"}
    # per table, the records each param removed, in the order the filters ran
    assert metrics["removed_by"]["conversations"] == {"clean.min_turns": 1, "clean.max_message_chars": 1,
                                                      "clean.sft_requires_thumbs_up": 1}
    assert metrics["removed_by"]["feedback"] == {"clean.min_turns": 1, "clean.max_message_chars": 1}
    assert metrics["warnings"] == []
    assert metrics["sources"]["chai"] == {"format": "chai_feedback", "rows": 4, "used": 2, "rejected": 2,
                                          "reject_reasons": {"fewer than … messages (clean.min_turns)": 1,
                                                             "message longer than clean.max_message_chars": 1}}


def test_a_filter_that_removes_every_record_of_a_source_is_a_warning():
    raw = {"chai": chai([("a", talk(1), True), ("b", talk(2), True)]),
           "rp": roleplay([[("user", "hi"), ("assistant", "hello there")]])}
    _, metrics, _ = clean(raw, {**BASE, "min_turns": 3, "mix": {"chai": 0}})
    assert metrics["warnings"] == [
        "clean removed every conversations record of source 'chai' (2): clean.mix.chai = 0 (2)",
        "clean removed every conversations record of source 'rp' (1): clean.min_turns = 3 (1)",
        "clean removed every feedback record of source 'chai' (2): clean.mix.chai = 0 (2)"]


def test_dedup_across_sources_first_source_wins():
    conv = [("system", "Be Bot."), ("user", "Hello   THERE"), ("assistant", "General Kenobi.")]
    same = [("system", "Be Bot."), ("user", "hello there"), ("assistant", "general kenobi.")]
    raw = {"first": roleplay([conv]), "second": roleplay([same, [("user", "other"), ("assistant", "talk"),
                                                                 ("user", "more")]])}
    tables, metrics, _ = clean(raw, {**BASE, "min_turns": 2})
    assert tables["conversations"].select("source", "row").rows() == [("first", "0"), ("second", "1")]
    [reject] = tables["rejects"].to_dicts()
    assert (reject["source"], reject["row"]) == ("second", "0")
    assert reject["reason"] == f"duplicate of {tables['conversations']['id'][0]} (clean.dedup)"
    tables, _, _ = clean(raw, {**BASE, "min_turns": 2, "dedup": False})
    assert tables["conversations"].height == 3


def test_split_is_stable_and_no_eval_prompt_is_in_train():
    rows = [(f"r{i}", talk(i % 60, f"Reply {i}"), True) for i in range(200)]
    params = {**BASE, "eval_fraction": 0.2}
    tables, _, _ = clean({"chai": chai(rows)}, params)
    conv = tables["conversations"]
    prompts = conv.with_columns(pl.col("messages").list.head(2).alias("p"))
    evals = set(map(str, prompts.filter(pl.col("split") == "eval")["p"].to_list()))
    trains = set(map(str, prompts.filter(pl.col("split") == "train")["p"].to_list()))
    assert evals and trains and not evals & trains
    # Stable: a row's split depends on the row, not on its position in the source.
    unique = [(f"u{i}", talk(1000 + i, f"Reply {i}"), True) for i in range(400)]
    a, _, _ = clean({"chai": chai(unique)}, params)
    b, _, _ = clean({"chai": chai(unique[::-1])}, params)
    assert dict(zip(a["conversations"]["row"], a["conversations"]["split"])) == \
        dict(zip(b["conversations"]["row"], b["conversations"]["split"]))
    share = (a["conversations"]["split"] == "eval").mean()
    assert 0.12 < share < 0.28


@pytest.mark.parametrize("weight, expected", [(0.5, None), (7, 7), (0, 0)])
def test_mix_samples_train_rows_only(weight, expected):
    rows = [(f"r{i}", talk(100 + i, f"Reply {i}"), True) for i in range(100)]
    params = {**BASE, "eval_fraction": 0.2}
    full, _, _ = clean({"chai": chai(rows)}, params)
    mixed, metrics, _ = clean({"chai": chai(rows)}, {**params, "mix": {"chai": weight}})
    split = lambda t, s: set(t["conversations"].filter(pl.col("split") == s)["row"])  # noqa: E731
    assert split(mixed, "eval") == split(full, "eval")
    kept = split(mixed, "train")
    assert kept <= split(full, "train")
    if expected is None:
        assert 0.3 * len(split(full, "train")) < len(kept) < 0.7 * len(split(full, "train"))
    else:
        assert len(kept) == expected
    assert metrics["sources"]["chai"]["rejected"] == len(split(full, "train")) - len(kept)
    again, _, _ = clean({"chai": chai(rows)}, {**params, "mix": {"chai": weight}})
    assert again["conversations"].equals(mixed["conversations"])


def test_mix_weight_must_be_a_fraction_or_a_count():
    with pytest.raises(ValueError, match="clean.mix.chai"):
        clean({"chai": chai([("a", talk(1), True)])}, {**BASE, "mix": {"chai": "half"}})


def test_arena_language_filter():
    raw = {"w": ("arena_wsdm", pl.DataFrame({
        "id": ["1", "2"], "prompt": ["p1", "p2"], "response_a": ["a", "a"], "response_b": ["b", "b"],
        "winner": ["model_a", "model_b"], "language": ["English", "Russian"]}))}
    tables, _, _ = clean(raw, {**BASE, "arena_languages": ["english"]})
    assert tables["arena"]["row"].to_list() == ["1"]
    assert tables["rejects"]["reason"].to_list() == ["language not in clean.arena_languages"]


def test_reason_kind_blanks_particulars():
    assert reason_kind("unknown speaker 'Igor' at 3") == "unknown speaker … at …"
    assert reason_kind("duplicate of 0123456789abcdef") == "duplicate of …"


def test_a_conversation_with_no_prompt_still_gets_a_split():
    conversations = [[("assistant", "Welcome, traveller."), ("user", "Hello there!"), ("user", "Anyone?")]] + \
        [[("assistant", f"Greeting {i}."), ("user", "Hi."), ("assistant", f"Reply {i}.")] for i in range(5)]
    tables, _, _ = clean({"r": roleplay(conversations)}, {**BASE, "min_turns": 2, "eval_fraction": 0.5})
    assert tables["conversations"]["split"].null_count() == 0


def test_a_chai_source_that_makes_no_records_of_a_table_stacks_with_other_sources():
    """No swipes (or no usable row at all) must still give tables of the records' types, or they do not stack."""
    dpo = ("chai_dpo", pl.DataFrame({"history": [[{"sender": "Bot", "value": "Hi"}, {"sender": U, "value": "Yo"}]],
                                     "accepted": ["Hey you"], "rejected": [["meh"]]}))
    params = {**BASE, "min_turns": 1}
    tables, metrics, *_ = clean({"chai": chai([("a", talk(1), True)]), "dpo": dpo}, params)
    assert tables["preferences"]["source"].to_list() == ["dpo"] and tables["conversations"]["row"].to_list() == ["a"]
    tables, metrics, *_ = clean({"chai": chai([("b", [(U, "hi")], True)]), "r": roleplay([talk_roles()])}, params)
    assert tables["conversations"]["source"].to_list() == ["r"] and metrics["sources"]["chai"]["rejected"] == 1


def talk_roles():
    return [("assistant", "Hello there."), ("user", "How are you?"), ("assistant", "Fine, thanks.")]
