"""Each source format on normal rows and on the edge cases real data has."""
from __future__ import annotations

import json

import polars as pl
import pytest

from ladder.data.formats import FORMATS, parse_source
from ladder.data.sources import _records_to_frame

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
    assert "3 speakers in a two-party chat ('Dorian', 'Igor', 'user')" in reasons[0] and "user message" in reasons[1]


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


# ------------------------------------------------------------- rows in the real schemas (../SOURCES.md facts)

def test_chai_feedback_real_bot_names_and_three_swipes_in_a_row():
    """tiendung/chai: bot names hold spaces, slashes and brackets, so " (deleted)" is a suffix and nothing else;
    swipes come just before the reply the user kept, three in a row seen."""
    hood, barbie = "Red Hood / Jason Todd", "Barbie Roberts (Super Kind)"
    rows = [chai_row("r1", [(hood, "*leans on the railing* You lost?"), (U, "maybe"),
                            (hood + " (deleted)", "Figures."), (hood + " (deleted)", "Go home."),
                            (hood + " (deleted)", "Tch."), (hood, "Stick with me, then."), (U, "ok")]),
            chai_row("r2", [(barbie, "Hi!! (I'm so happy to see you)"), (U, "hey barbie"),
                            (barbie + " (deleted)", "Hello (again)!"), (barbie, "Let's bake (cookies)!")],
                     thumbs_up=False)]
    parsed = parse("chai_feedback", rows)
    assert parsed.rejects == []
    first, second = table(parsed, "conversations")
    assert first["messages"] == msgs(("assistant", "*leans on the railing* You lost?"), ("user", "maybe"),
                                     ("assistant", "Stick with me, then."), ("user", "ok"))
    assert second["messages"] == msgs(("assistant", "Hi!! (I'm so happy to see you)"), ("user", "hey barbie"),
                                      ("assistant", "Let's bake (cookies)!"))
    pairs = table(parsed, "preferences")
    assert [(p["row"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("r1", "Stick with me, then.", "Figures."), ("r1", "Stick with me, then.", "Go home."),
        ("r1", "Stick with me, then.", "Tch."), ("r2", "Let's bake (cookies)!", "Hello (again)!")]
    assert all(p["prompt"] == first["messages"][:2] for p in pairs[:3])
    assert [f["label"] for f in table(parsed, "feedback")] == [1.0, 0.0]


def test_chai_feedback_another_bots_deleted_reply_is_an_unknown_speaker():
    row = chai_row("x", [("Red Hood / Jason Todd", "Hey."), (U, "hi"), ("Red Hood (deleted)", "no"),
                         ("Red Hood / Jason Todd", "Yo.")])
    parsed = parse("chai_feedback", [row])
    assert "unknown speaker 'Red Hood (deleted)'" in parsed.rejects[0]["reason"]


def test_chai_prize_flat_real_layout_without_persona():
    """The 20231007 prize export: `Name: text` turns joined by one newline, no persona header, the greeting
    first, a message may hold blank lines, swipes as `<bot> (deleted): text`."""
    bot = "Red Hood / Jason Todd"
    text = "\n".join([f"{bot}: *lands on the roof*\n\nYou shouldn't be up here.",
                      "Anonymous user: Why not?\nI like the view.",
                      f"{bot} (deleted): Because.",
                      f"{bot}: Gotham at night isn't a view.\n\nNote: it's a warning.",
                      "Anonymous user: ok ok"])
    row = {"conversation_id": "c1", "bot_id": "b1", "user_id": "u1", "conversation": text, "thumbs_up": True,
           "feedback": "", "model_name": "m", "season": "s1"}
    parsed = parse("chai_prize_flat", [row, {**row, "conversation_id": "c2",
                                             "conversation": text.replace(bot, "Barbie Roberts (Super Kind)")}])
    assert parsed.rejects == []
    first, second = table(parsed, "feedback")
    assert first["messages"] == msgs(("assistant", "*lands on the roof*\n\nYou shouldn't be up here."),
                                     ("user", "Why not?\nI like the view."),
                                     ("assistant", "Gotham at night isn't a view.\n\nNote: it's a warning."),
                                     ("user", "ok ok"))
    assert second["messages"] == first["messages"] and first["label"] == 1.0
    assert all(m["role"] != "system" for m in first["messages"])


def test_messages_zerofata_crlf_card_with_user_persona_section():
    card = ("You are Kaito, a quiet swordsman.\r\n\r\n## Scenario\r\nA rainy inn.\r\n\r\n"
            "# Mika's (User persona)\r\nMika is a travelling merchant.\r\n")
    row = {"messages": [{"role": "system", "content": card},
                        {"role": "assistant", "content": "*wipes the blade* Sit.\r\nIf you must."},
                        {"role": "user", "content": "Thanks. Rough night?"},
                        {"role": "assistant", "content": "Rougher for some."}]}
    [conv] = table(parse("messages", [row]), "conversations")
    assert conv["messages"][0] == {"role": "system", "content": card.replace("\r\n", "\n").strip()}
    assert conv["messages"][0]["content"].endswith("# Mika's (User persona)\nMika is a travelling merchant.")
    assert [m["role"] for m in conv["messages"]] == ["system", "assistant", "user", "assistant"]
    assert "\r" not in "".join(m["content"] for m in conv["messages"])


def test_role_prefixed_text_erotiquant_card_placeholder_and_speaker_names():
    """erotiquant3: the SYSTEM part is a character card (its example lines are not turns), turns may carry the
    speaker's name and the literal {{user}} placeholder; both are text and stay as they are."""
    text = ("SYSTEM: Vale's card.\nVale is a sharp-tongued librarian.\n\nExample:\n{{user}}: Where's the atlas?\n"
            "Vale: Third shelf, obviously.\n"
            "USER: {{user}}: Hi, is this the archive?\n"
            "ASSISTANT: Vale: *looks up* It is, {{user}}. Shoes off.\n\nWe have rules.\n"
            "USER: Fine.\nASSISTANT: Vale: Good.")
    [conv] = table(parse("role_prefixed_text", [{"text": text}]), "conversations")
    assert [m["role"] for m in conv["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert conv["messages"][0]["content"].endswith("{{user}}: Where's the atlas?\nVale: Third shelf, obviously.")
    assert conv["messages"][1]["content"] == "{{user}}: Hi, is this the archive?"
    assert conv["messages"][2]["content"] == "Vale: *looks up* It is, {{user}}. Shoes off.\n\nWe have rules."


def dpo_row(senders_values, accepted="Then stay.", rejected=("Leave.",)):
    return {"history": [{"sender": s, "value": v} for s, v in senders_values], "accepted": accepted,
            "rejected": list(rejected) if isinstance(rejected, tuple) else rejected, "thumbs_up": True,
            "submission_id": "sub", "model_name": "m", "bot_id": "bot"}


def test_chai_dpo_senders_whose_names_are_not_known():
    hood, barbie = "Red Hood / Jason Todd", "Barbie Roberts (Super Kind)"
    rows = [dpo_row([(hood, "You lost?"), (U, "maybe"), (hood, "Figures."), (U, "can I stay?")]),
            # neither name is a role: the first speaker is the bot (the greeting), the other the user
            dpo_row([(barbie, "Hi!!"), ("You", "hey"), (barbie, "Cookies?"), ("You", "yes")], rejected="No."),
            # a swiped reply left in the history names the bot and is dropped
            dpo_row([("Luna", "Hello."), ("Kai", "hi"), ("Luna (deleted)", "Go away."), ("Luna", "Welcome."),
                     ("Kai", "thanks")])]
    parsed = parse("chai_dpo", rows)
    assert parsed.rejects == []
    prompts = {p["row"]: p["prompt"] for p in table(parsed, "preferences")}
    assert prompts["0"] == msgs(("assistant", "You lost?"), ("user", "maybe"), ("assistant", "Figures."),
                                ("user", "can I stay?"))
    assert prompts["1"] == msgs(("assistant", "Hi!!"), ("user", "hey"), ("assistant", "Cookies?"), ("user", "yes"))
    assert prompts["2"] == msgs(("assistant", "Hello."), ("user", "hi"), ("assistant", "Welcome."), ("user", "thanks"))
    assert [(p["chosen"], p["rejected"]) for p in table(parsed, "preferences")][1] == ("Then stay.", "No.")


@pytest.mark.parametrize("history, reason", [
    ([("Luna", "Hi"), ("Kai", "yo"), ("Mira", "hey"), ("Kai", "?")], "3 speakers in a two-party chat"),
    ([("Luna", "Hi"), (U, "yo"), ("Luna", "So?")], "does not end with a user message"),  # named: Luna is the bot
    ([(U, "hi"), ("user", "hello?")], "both speakers ('Anonymous user', 'user') read as the user"),
    ([("Luna", "Hi")], "does not end with a user message"),  # a lone greeting: nothing for the reply to answer
    # no name tells: the first speaker is the bot, so a history the same speaker closes ends with the bot
    ([("Kai", "knock knock"), ("Luna", "Who's there?"), ("Kai", "me")], "does not end with a user message"),
])
def test_chai_dpo_histories_that_are_not_a_two_party_chat_ending_with_the_user(history, reason):
    parsed = parse("chai_dpo", [dpo_row([("Luna", "Hello."), (U, "hi")]), dpo_row(history)])
    assert [r["row"] for r in parsed.rejects] == ["1"] and reason in parsed.rejects[0]["reason"]
    assert {p["row"] for p in table(parsed, "preferences")} == {"0"}


def test_chatml_conversation_rows_of_both_revisions_in_one_table():
    """Both revisions in one file: every turn carries every key (null where its revision has none) and the
    `system` struct is null in the newer rows; the revision is told by the values."""
    new = {"conversation": [{"content": "You are Vex.", "do_train": False, "role": "system"},
                            {"content": "Obviously.", "do_train": True, "role": "assistant"},
                            {"content": "hi", "do_train": False, "role": "user"},
                            {"content": "Hm.", "do_train": True, "role": "assistant"}]}
    old = {"system": {"from": "system", "value": "You are Vex."},
           "conversation": [{"from": "Vex", "role_type": "char", "value": "Obviously."},
                            {"from": "User", "role_type": "user", "value": "hi"},
                            {"from": "Vex", "role_type": "char", "value": "Hm."}]}
    parsed = parse("chatml_conversation", [new, old, new])
    assert parsed.rejects == []
    expected = msgs(("system", "You are Vex."), ("assistant", "Obviously."), ("user", "hi"), ("assistant", "Hm."))
    assert [c["messages"] for c in table(parsed, "conversations")] == [expected] * 3
    broken = {"conversation": [{"content": "hi", "role": None}, {"content": "yo", "role": "assistant"}]}
    mixed = {"conversation": [{"from": "User", "role_type": "user", "value": "hi"},
                              {"content": "yo", "role": "assistant"}]}
    rejects = parse("chatml_conversation", [new, broken, mixed]).rejects
    assert "conversation[0]: unknown role None" in rejects[0]["reason"]
    assert "mixes" in rejects[1]["reason"]


# ------------------------------------------------------------------------------- ids must be text or integers

CHAI_TALK = [("Bot", "hi"), (U, "yo"), ("Bot", "hey")]
KEYED = {
    "chai_feedback": lambda i: chai_row(i, CHAI_TALK),
    "chai_prize_flat": lambda i: {"conversation_id": i, "conversation": "Pip: hi\nAnonymous user: yo\nPip: ok",
                                  "thumbs_up": True},
    "arena_wsdm": lambda i: {"id": i, "prompt": "Q?", "response_a": "A", "response_b": "B", "winner": "model_a"},
    "arena_lmsys": lambda i: {"id": i, "prompt": '["Q?"]', "response_a": '["A"]', "response_b": '["B"]',
                              "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0},
}


def used_rows(parsed):
    return sorted({r for t in parsed.tables.values() for r in t["row"].to_list()})


@pytest.mark.parametrize("fmt", sorted(KEYED))
def test_an_id_that_is_not_text_or_an_integer_rejects_its_row(fmt):
    """True is an int to Python: it was the id "True". A float, list or object is no id either."""
    ids = ["a", 7, True, 1.5, [1], {"k": 1}]
    parsed = parse(fmt, [KEYED[fmt](i) for i in ids])
    assert used_rows(parsed) == ["7", "a"]
    column = FORMATS[fmt].id_column
    assert {r["row"]: r["reason"] for r in parsed.rejects} == {
        f"@{k}": f"{column} is not a string or an integer ({ids[k]!r})" for k in range(2, 6)}


@pytest.mark.parametrize("fmt", sorted(KEYED))
@pytest.mark.parametrize("ids", [[True, False], [1.0, 2.5]])
def test_an_id_column_of_booleans_or_floats_rejects_every_row(fmt, ids):
    parsed = parse(fmt, [KEYED[fmt](i) for i in ids])
    assert used_rows(parsed) == [] and [r["row"] for r in parsed.rejects] == ["@0", "@1"]
    assert all("is not a string or an integer" in r["reason"] for r in parsed.rejects)
