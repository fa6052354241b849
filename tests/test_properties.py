"""Random and malformed rows never crash a parser or the clean stage, and every row is accounted for:
used (in some table) or rejected, never both, never neither."""
from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladder.records import TABLES
from ladder.sources import _records_to_frame
from ladder.cleaning import clean

PARAMS = {"seed": 0, "eval_fraction": 0.3, "min_turns": 2, "min_message_chars": 1, "max_message_chars": 200,
          "min_conversation_chars": 1, "max_conversation_chars": 2000, "sft_requires_thumbs_up": True,
          "swipe_pairs": True, "arena_languages": [], "dedup": True, "mix": {"src": 0.7}}

BOT, USER = "Bot", "Anonymous user"
scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False) | \
    st.text(max_size=12)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "text", "role", "content", "sender", "value", "from"]), inner, max_size=3), max_leaves=8)
words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=15)
names = st.sampled_from([BOT, USER, BOT + " (deleted)", "Other", "", "user", "assistant"])
roles = st.sampled_from(["system", "user", "assistant", "gpt", "narrator", None])


def field(plausible):
    return st.one_of(plausible, plausible, anything)


def chat_line(name):
    return st.tuples(name, words).map(lambda t: f"{t[0]}: {t[1]}")


ROWS = {
    "chai_feedback": st.fixed_dictionaries({
        "_id": field(st.sampled_from(["a", "b", "c", "d", None])),
        "conversation": field(st.lists(st.fixed_dictionaries({"name": names, "text": words}), max_size=6)),
        "thumbs_up": field(st.booleans() | st.none())}),
    "chai_prize_flat": st.fixed_dictionaries({
        "conversation_id": field(st.integers(0, 5)),
        "conversation": field(st.lists(chat_line(names) | words, max_size=6).map("\n".join)),
        "thumbs_up": field(st.booleans())}),
    "chatml_conversation": st.fixed_dictionaries({"conversation": field(st.lists(st.fixed_dictionaries(
        {"role": roles, "content": words}), max_size=5))}),
    "messages": st.fixed_dictionaries({"messages": field(st.lists(st.fixed_dictionaries(
        {"role": roles, "content": words}), max_size=5))}),
    "role_prefixed_text": st.fixed_dictionaries({"text": field(st.lists(
        chat_line(st.sampled_from(["SYSTEM", "USER", "ASSISTANT", "BOB"])) | words, max_size=6).map("\n".join))}),
    "zephyr_text": st.fixed_dictionaries({"text": field(st.lists(st.tuples(roles, words).map(
        lambda t: f"<|{t[0]}|>\n{t[1]}</s>"), max_size=5).map("\n".join))}),
    "chai_dpo": st.fixed_dictionaries({
        "history": field(st.lists(st.fixed_dictionaries({"sender": names, "value": words}), max_size=5)),
        "accepted": field(words), "rejected": field(words | st.lists(words, max_size=3))}),
    "arena_wsdm": st.fixed_dictionaries({
        "id": field(st.sampled_from(["x", "y", "z"])), "prompt": field(words), "response_a": field(words),
        "response_b": field(words), "winner": field(st.sampled_from(["model_a", "model_b", "tie", "draw", None])),
        "language": field(st.sampled_from(["English", "French", None]))}),
    "arena_lmsys": st.fixed_dictionaries({
        "id": field(st.integers(0, 4)),
        "prompt": field(st.lists(words | st.none(), max_size=2).map(json.dumps) | words),
        "response_a": field(st.lists(words | st.none(), max_size=2).map(json.dumps)),
        "response_b": field(st.lists(words | st.none(), max_size=2).map(json.dumps)),
        "winner_model_a": field(st.integers(0, 1)), "winner_model_b": field(st.integers(0, 1)),
        "winner_tie": field(st.integers(0, 1))}),
}


def as_raw(rows: list[dict]) -> pl.DataFrame:
    frame, json_columns = _records_to_frame(rows)
    for name in json_columns:
        frame = frame.with_columns(pl.Series(name, [None if v is None else json.loads(v) for v in frame[name]],
                                             dtype=pl.Object))
    return frame


def check_accounting(fmt: str, rows: list[dict]) -> None:
    tables, metrics, _ = clean({"src": (fmt, as_raw(rows))}, PARAMS)
    used = set().union(*(set(tables[t]["row"].to_list()) for t in TABLES))
    rejected = tables["rejects"]["row"].to_list()
    assert len(rejected) == len(set(rejected)), "a row rejected twice"
    assert not used & set(rejected), "a row both used and rejected"
    assert len(used) + len(rejected) == len(rows), "a row neither used nor rejected"
    assert metrics["sources"]["src"]["rows"] == len(rows)
    for t in TABLES:
        assert tables[t]["id"].is_unique().all()


@pytest.mark.parametrize("fmt", sorted(ROWS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_rows_are_accounted_for(fmt, data):
    check_accounting(fmt, data.draw(st.lists(ROWS[fmt], min_size=1, max_size=6)))
