"""Each source format on normal rows and on the edge cases real data has."""
from __future__ import annotations

import json

import polars as pl
import pytest

from ladder.formats import FORMATS, parse_source
from ladder.sources import _records_to_frame

U = "Anonymous user"
OPTS = {"swipe_pairs": True}


def parse(fmt: str, rows: list[dict], options=OPTS):
    frame, json_columns = _records_to_frame(rows)
    for name in json_columns:  # as read_raw gives them back to the clean stage
        frame = frame.with_columns(pl.Series(name, [None if v is None else json.loads(v) for v in frame[name]],
                                             dtype=pl.Object))
    return parse_source(frame, "src", fmt, options, file="raw.parquet")


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def table(parsed, name):
    return parsed.tables[name].to_dicts()


# ------------------------------------------------------------------------------------- chai_feedback

def chai_row(_id, conversation, thumbs_up=True):
    return {"_id": _id, "conversation": [{"name": n, "text": t} for n, t in conversation], "thumbs_up": thumbs_up,
            "languages": ["en"], "feedback": "", "model_name": "m"}


def test_chai_feedback_speakers_by_name_and_swipes_become_pairs():
    row = chai_row("a", [("Aria", "Hello, I am Aria."), (U, "Hi! ✨ Tell me\r\na story."),
                         ("Aria (deleted)", "ok"), ("Aria (deleted)", "whatever"),
                         ("Aria", "Once upon a time...\n\nThe end."), (U, "More"), (U, "please"), ("Aria", "Fine.")])
    parsed = parse("chai_feedback", [row])
    [conv] = table(parsed, "conversations")
    assert conv["messages"] == msgs(("assistant", "Hello, I am Aria."), ("user", "Hi! ✨ Tell me\na story."),
                                    ("assistant", "Once upon a time...\n\nThe end."), ("user", "More\n\nplease"),
                                    ("assistant", "Fine."))
    assert conv["thumbs_up"] is True and conv["row"] == "a"
    pairs = table(parsed, "preferences")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("Once upon a time...\n\nThe end.", "ok"),
                                                             ("Once upon a time...\n\nThe end.", "whatever")]
    assert pairs[0]["prompt"] == conv["messages"][:2]
    assert all("deleted" not in m["content"] for m in conv["messages"])
    [fb] = table(parsed, "feedback")
    assert fb["label"] == 1.0 and fb["messages"] == conv["messages"]
    assert parsed.rejects == []


def test_chai_feedback_bot_named_like_position_is_still_by_name():
    # The bot speaks twice in a row at the start: by position the second would be the user.
    row = chai_row("b", [("Kael", "Engines!"), ("Kael", "Hey you."), (U, "hi"), ("Kael", "Yo.")], thumbs_up=False)
    [conv] = table(parse("chai_feedback", [row]), "conversations")
    assert [m["role"] for m in conv["messages"]] == ["assistant", "user", "assistant"]
    assert conv["messages"][0]["content"] == "Engines!\n\nHey you."


def test_chai_feedback_swipe_without_kept_reply_makes_no_pair_and_is_counted():
    row = chai_row("c", [("Mira", "Hello"), (U, "hi"), ("Mira", "Hey"), (U, "bye"), ("Mira (deleted)", "no")])
    parsed = parse("chai_feedback", [row])
    assert table(parsed, "preferences") == []
    assert sum(parsed.dropped.values()) == 1
    assert [m["content"] for m in table(parsed, "conversations")[0]["messages"]] == ["Hello", "hi", "Hey", "bye"]


@pytest.mark.parametrize("conversation, reason", [
    ([], "conversation is empty"),
    ([(U, "hi"), ("Bot", "hello")], "does not start with the bot's greeting"),
    ([("Bot", "hello"), ("Stranger", "hi")], "unknown speaker 'Stranger'"),
    ([("Bot", "hello"), (U, "  ")], "empty message"),
])
def test_chai_feedback_rejects_with_reason(conversation, reason):
    parsed = parse("chai_feedback", [chai_row("ok", [("Bot", "hi"), (U, "yo"), ("Bot", "hey")]),
                                     chai_row("bad", conversation)])
    assert [r["row"] for r in parsed.rejects] == ["bad"]
    assert reason in parsed.rejects[0]["reason"]
    assert json.loads(parsed.rejects[0]["raw"])["_id"] == "bad"
    assert [c["row"] for c in table(parsed, "conversations")] == ["ok"]


def test_chai_feedback_duplicate_id_and_missing_thumbs():
    rows = [chai_row("x", [("Bot", "hi"), (U, "yo"), ("Bot", "hey")], thumbs_up=None),
            chai_row("x", [("Bot", "hi"), (U, "yo"), ("Bot", "hey")])]
    parsed = parse("chai_feedback", rows)
    assert len(table(parsed, "conversations")) == 1 and table(parsed, "feedback") == []
    assert [r["row"] for r in parsed.rejects] == ["x@1"] and "duplicate _id" in parsed.rejects[0]["reason"]


def test_chai_feedback_column_of_mixed_types_rejects_only_the_odd_rows():
    rows = [chai_row("a", [("Bot", "hi"), (U, "yo"), ("Bot", "hey")]),
            {"_id": "b", "conversation": "not a list", "thumbs_up": "yes"}]
    parsed = parse("chai_feedback", rows)
    assert [r["row"] for r in parsed.rejects] == ["b"]
    assert len(table(parsed, "conversations")) == 1


# ---------------------------------------------------------------------------------- chai_prize_flat

def test_chai_prize_flat_persona_continuations_and_swipes():
    text = ("Sir Ronan's Persona: A stoic knight.\nHonour first.\n<START>\n"
            "Sir Ronan: Halt, traveller.\nWho goes there?\n"
            "Anonymous user: A friend: truly.\n"
            "Sir Ronan (deleted): ok\n"
            "Sir Ronan: Then pass, friend.")
    parsed = parse("chai_prize_flat", [{"conversation_id": 7, "conversation": text, "thumbs_up": False}])
    [fb] = table(parsed, "feedback")
    assert fb["messages"] == msgs(("system", "Sir Ronan's Persona: A stoic knight.\nHonour first."),
                                  ("assistant", "Halt, traveller.\nWho goes there?"),
                                  ("user", "A friend: truly."), ("assistant", "Then pass, friend."))
    assert fb["label"] == 0.0 and fb["row"] == "7"


def test_chai_prize_flat_without_header_takes_bot_from_greeting():
    text = "Pip: Boom!\nAnonymous user: hello\nPip: Science!"
    [fb] = table(parse("chai_prize_flat", [{"conversation_id": "p", "conversation": text, "thumbs_up": True}]),
                 "feedback")
    assert [m["role"] for m in fb["messages"]] == ["assistant", "user", "assistant"]


def test_chai_prize_flat_rejects():
    rows = [{"conversation_id": "a", "conversation": "no speakers here", "thumbs_up": True},
            {"conversation_id": "b", "conversation": "Pip: hi\nAnonymous user: yo\nPip: ok", "thumbs_up": "maybe"}]
    parsed = parse("chai_prize_flat", rows)
    assert {r["row"]: r["reason"] for r in parsed.rejects}.keys() == {"a", "b"}
    assert "thumbs_up" in {r["row"]: r["reason"] for r in parsed.rejects}["b"]


# ------------------------------------------------------------------------------ role-play formats

def test_chatml_conversation_both_revisions():
    new = {"conversation": [{"role": "system", "content": "You are Vex."}, {"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "Obviously."}]}
    old = {"system": {"from": "system", "value": "You are Vex."},
           "conversation": [{"from": "Anna", "role_type": "user", "value": "hi"},
                            {"from": "Vex", "role_type": "char", "value": "Obviously."}]}
    for row in (new, old):
        [conv] = table(parse("chatml_conversation", [row]), "conversations")
        assert conv["messages"] == msgs(("system", "You are Vex."), ("user", "hi"), ("assistant", "Obviously."))
        assert conv["thumbs_up"] is None


def test_messages_crlf_and_greeting_before_user():
    row = {"messages": [{"role": "system", "content": "Card\r\nline two\r\n"},
                        {"role": "assistant", "content": "Greetings!"}, {"role": "user", "content": "hey"},
                        {"role": "assistant", "content": "Hi\r\nthere"}]}
    [conv] = table(parse("messages", [row]), "conversations")
    assert conv["messages"] == msgs(("system", "Card\nline two"), ("assistant", "Greetings!"), ("user", "hey"),
                                    ("assistant", "Hi\nthere"))


def test_role_prefixed_text_multiline():
    text = "SYSTEM: Be Lena.\nUSER: Who did it?\nASSISTANT: The butler.\nObviously.\nUSER: Why?\nASSISTANT: Motive."
    [conv] = table(parse("role_prefixed_text", [{"text": text}]), "conversations")
    assert conv["messages"][2] == {"role": "assistant", "content": "The butler.\nObviously."}
    parsed = parse("role_prefixed_text", [{"text": "preamble\nUSER: hi\nASSISTANT: yo"}])
    assert parsed.rejects and "before the first speaker" in parsed.rejects[0]["reason"]


def test_zephyr_text_blocks():
    text = "<|system|>\nBe Sable.</s>\n<|user|>\nHello</s>\n<|assistant|>\nThe forest\nremembers.</s>"
    [conv] = table(parse("zephyr_text", [{"name": "Sable", "description": "", "text": text}]), "conversations")
    assert conv["messages"] == msgs(("system", "Be Sable."), ("user", "Hello"), ("assistant", "The forest\nremembers."))
    parsed = parse("zephyr_text", [{"text": "junk <|user|>hi</s>"}])
    assert parsed.rejects and "outside" in parsed.rejects[0]["reason"]


# ------------------------------------------------------------------------------------------ chai_dpo

def test_chai_dpo_rejected_as_list_or_string():
    history = [{"sender": "Dorian", "value": "Welcome."}, {"sender": "user", "value": "Hello"}]
    rows = [{"history": history, "accepted": "How delightfully mortal.", "rejected": ["ok", "ok", "lol"]},
            {"history": history, "accepted": "Charmed.", "rejected": "meh"}]
    parsed = parse("chai_dpo", rows)
    pairs = table(parsed, "preferences")
    assert [(p["row"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("0", "How delightfully mortal.", "ok"), ("0", "How delightfully mortal.", "lol"), ("1", "Charmed.", "meh")]
    assert pairs[0]["prompt"] == msgs(("assistant", "Welcome."), ("user", "Hello"))
    assert len({p["id"] for p in pairs}) == 3


def test_chai_dpo_unknown_speaker_and_no_user_turn_are_rejected():
    rows = [{"history": [{"sender": "Dorian", "value": "Hi"}, {"sender": "Igor", "value": "Master!"},
                         {"sender": "user", "value": "yo"}], "accepted": "a", "rejected": ["b"]},
            {"history": [{"sender": "Dorian", "value": "Hi"}], "accepted": "a", "rejected": ["b"]}]
    parsed = parse("chai_dpo", rows)
    reasons = [r["reason"] for r in parsed.rejects]
    assert "unknown speaker 'Igor'" in reasons[0] and "user message" in reasons[1]


# --------------------------------------------------------------------------------------------- arena

def test_arena_wsdm():
    rows = [{"id": "x1", "prompt": "Q?", "response_a": "A", "response_b": "B", "winner": "model_b",
             "language": "Vietnamese"},
            {"id": "x2", "prompt": "Q?", "response_a": "A", "response_b": "B", "winner": None, "language": "English"}]
    parsed = parse("arena_wsdm", rows)
    [rec] = table(parsed, "arena")
    assert (rec["winner"], rec["language"], rec["row"]) == ("model_b", "Vietnamese", "x1")
    assert [r["row"] for r in parsed.rejects] == ["x2"]


def test_arena_lmsys_json_turns_nulls_and_ties():
    rows = [{"id": 1, "prompt": json.dumps(["Hi", "And?"]), "response_a": json.dumps(["Hello", None]),
             "response_b": json.dumps(["Yo", "More"]), "winner_model_a": 0, "winner_model_b": 0, "winner_tie": 1},
            {"id": 2, "prompt": json.dumps(["Hi"]), "response_a": json.dumps(["a"]), "response_b": json.dumps(["b"]),
             "winner_model_a": 1, "winner_model_b": 1, "winner_tie": 0},
            {"id": 3, "prompt": "[broken", "response_a": "[]", "response_b": "[]",
             "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0}]
    parsed = parse("arena_lmsys", rows)
    [rec] = table(parsed, "arena")
    assert (rec["prompt"], rec["response_a"], rec["response_b"], rec["winner"]) == ("Hi\n\nAnd?", "Hello", "Yo\n\nMore", "tie")
    assert rec["language"] is None
    assert sorted(r["row"] for r in parsed.rejects) == ["2", "3"]


# ------------------------------------------------------------------------------------ missing column

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_missing_column_names_source_column_and_file(fmt):
    with pytest.raises(ValueError) as err:
        parse_source(pl.DataFrame({"unrelated": [1]}), "mysource", fmt, OPTS, file="data/raw/mysource.parquet")
    message = str(err.value)
    assert "mysource" in message and "data/raw/mysource.parquet" in message
    assert repr(FORMATS[fmt].required[0]) in message


# ------------------------------------------------------------------------------- found in review

def test_a_lone_surrogate_is_a_reject_not_a_crash():
    rows = [{"id": 1, "prompt": json.dumps(["hi \ud83d"]), "response_a": json.dumps(["a"]),
             "response_b": json.dumps(["b"]), "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0},
            {"id": 2, "prompt": json.dumps(["fine"]), "response_a": json.dumps(["a"]),
             "response_b": json.dumps(["b"]), "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0}]
    parsed = parse("arena_lmsys", rows)
    assert [r["row"] for r in parsed.rejects] == ["1"] and "Unicode" in parsed.rejects[0]["reason"]
    assert table(parsed, "arena")[0]["row"] == "2"


def test_chai_prize_flat_swiped_greeting_is_rejected():
    text = "Vex (deleted): hi\nVex: Hello.\nAnonymous user: yo\nVex: Obviously."
    parsed = parse("chai_prize_flat", [{"conversation_id": "s", "conversation": text, "thumbs_up": True}])
    assert parsed.rejects and "bot's name" in parsed.rejects[0]["reason"]


def test_chai_feedback_swipe_pair_chooses_the_whole_kept_turn():
    row = chai_row("m", [("Bot", "Hi"), (U, "yo"), ("Bot (deleted)", "meh"), ("Bot", "First."), ("Bot", "Second.")])
    parsed = parse("chai_feedback", [row])
    [pair] = table(parsed, "preferences")
    assert pair["chosen"] == "First.\n\nSecond." == table(parsed, "conversations")[0]["messages"][-1]["content"]
