"""Random and malformed rows never crash a parser or the clean stage, and every row is accounted for:
used (in some table) or rejected, never both, never neither."""
from __future__ import annotations

import csv
import io
import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladder.data.records import TABLES
from ladder.data.formats import FORMATS
from ladder.data.sources import _records_to_frame, read_raw, read_source, write_raw
from ladder.data.cleaning import clean

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
    tables, metrics, *_ = clean({"src": (fmt, as_raw(rows))}, PARAMS)
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


# ------------------------------------------------------------------------------ through the file, every format

FILE_PARAMS = {**PARAMS, "dedup": False, "mix": {"src": 1.0}}  # a good row's outcome must not depend on the others
ODD = "\u2028\u2029\x85\ufeff"  # line breaks to str.splitlines, characters to JSON
GOOD_ROWS = {
    "chai_feedback": [
        {"_id": "good-0", "conversation": [
            {"name": BOT, "text": "Hello\u2028there."}, {"name": USER, "text": "Hi\r\nyou\x85!"},
            {"name": BOT + " (deleted)", "text": "meh\ufeff"}, {"name": BOT, "text": "Welcome\u2029back."}],
         "thumbs_up": True, "languages": ["en"]},
        {"_id": "good-1", "conversation": [{"name": BOT, "text": "Hi."}, {"name": USER, "text": "Yo" + ODD},
                                           {"name": BOT, "text": "Hey."}], "thumbs_up": False}],
    "chai_prize_flat": [
        {"conversation_id": 1000, "conversation": f"Pip: Boom\u2028!\r\n{USER}: hello\x85\nPip (deleted): nope\n"
                                                  "Pip: Science\ufeff!", "thumbs_up": True},
        {"conversation_id": 1001, "conversation": f"Mira's Persona: a baker\u2029.\n<START>\nMira: Fresh bread!\n"
                                                  f"{USER}: yum{ODD}\nMira: Enjoy.", "thumbs_up": False}],
    "chatml_conversation": [
        {"conversation": [{"role": "system", "content": "You are Vex\u2028."},
                          {"role": "user", "content": "hi\r\nthere"},
                          {"role": "assistant", "content": "Obviously\x85."}]},
        {"system": {"from": "system", "value": "You are Vex\ufeff."},
         "conversation": [{"from": "User", "role_type": "user", "value": "hi" + ODD},
                          {"from": "Vex", "role_type": "char", "value": "Hm."}]}],
    "messages": [
        {"messages": [{"role": "system", "content": "Card\r\n"}, {"role": "assistant", "content": "Greeting\u2029"},
                      {"role": "user", "content": "hey\x85"}, {"role": "assistant", "content": "yo\ufeff"}]},
        {"messages": [{"role": "user", "content": "a" + ODD + "b"}, {"role": "assistant", "content": "c"}]}],
    "role_prefixed_text": [
        {"text": "SYSTEM: Be Vex\u2028.\nASSISTANT: Obviously.\r\nUSER: hi\x85\nASSISTANT: Hm\ufeff."},
        {"text": f"USER: a{ODD}b\nASSISTANT: c\u2029d"}],
    "zephyr_text": [
        {"name": "Mira", "description": "baker\u2028", "text": "<|system|>\nYou are Mira\u2028.</s>\n<|user|>\nhi\r\n"
                                                            "</s>\n<|assistant|>\nFresh\x85 bread\ufeff!</s>"},
        {"text": f"<|user|>\na{ODD}b</s>\n<|assistant|>\nc</s>"}],
    "chai_dpo": [
        {"history": [{"sender": "Kael", "value": "Hello\u2028."}, {"sender": USER, "value": "hi\r\nthere"}],
         "accepted": "Welcome\x85 in", "rejected": ["meh\ufeff", "nah"]},
        {"history": [{"sender": "Kael", "value": "Hi."}, {"sender": "You", "value": "yo" + ODD}],
         "accepted": "A", "rejected": "B\u2029"}],
    "arena_wsdm": [
        {"id": "good-0", "prompt": "Q\u2028?", "response_a": "A\r\nB", "response_b": "C\x85", "winner": "model_a",
         "language": "English"},
        {"id": "good-1", "prompt": "R" + ODD + "?", "response_a": "x", "response_b": "y\ufeff", "winner": "model_b",
         "language": None}],
    "arena_lmsys": [
        {"id": 1000, "prompt": json.dumps(["Q\u2028?"], ensure_ascii=False), "response_a": json.dumps(["A\r\n", None]),
         "response_b": json.dumps(["B\ufeff"], ensure_ascii=False), "winner_model_a": 0, "winner_model_b": 0,
         "winner_tie": 1},
        {"id": 1001, "prompt": json.dumps(["R" + ODD]), "response_a": json.dumps(["x"]),
         "response_b": json.dumps(["y"]), "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0}],
}
BOM = b"\xef\xbb\xbf"
DEEP = b"[" * 5000 + b"]" * 5000


def json_line(row) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode()


def nested(depth: int) -> list:
    inner: list = []
    for _ in range(depth - 1):
        inner = [inner]
    return inner


def splice(line: bytes, at: int, byte: bytes) -> bytes:
    at %= len(line) + 1
    return line[:at] + byte + line[at:]


def bad_lines(fmt: str) -> st.SearchStrategy[bytes]:
    good = st.sampled_from(GOOD_ROWS[fmt])
    return st.one_of(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from([b"", b" \t", b"\r"]),  # blank
        st.builds(splice, good.map(json_line), st.integers(0, 10**4),
                  st.sampled_from([b"\xff", b"\xc0", b"\x80", b"\xed\xa0\x80"])),  # not UTF-8
        good.map(lambda r: json_line({**r, "deep": nested(100)})), st.just(DEEP), st.just(b'{"a": ' + DEEP + b"}"),
        st.builds(lambda line, k: line[:1 + k % (len(line) - 1)], good.map(json_line), st.integers(0, 10**4)),
        ROWS[fmt].map(json_line))


def is_row(line: bytes, first: bool) -> bool:
    """What the JSON Lines reader makes a row of: a line that is not blank once a BOM (the file's, or one where two
    files were joined) is off."""
    return bool(line.removeprefix(BOM).strip())


def through_the_file(tmp_path, fmt: str, data: bytes):
    path = tmp_path / "src.jsonl"
    path.write_bytes(data)
    frame, json_columns = read_source({"path": str(path), "format": fmt}, "src")
    write_raw(frame, json_columns, tmp_path / "raw.parquet")
    raw = read_raw(tmp_path / "raw.parquet")
    tables, metrics = clean({"src": (fmt, raw)}, FILE_PARAMS)[:2]
    return raw, tables, metrics


def outcomes(tables: dict, rows: list[str]) -> list[dict]:
    """Per source row, the records it made in each table, by content (index-keyed formats number rows by line)."""
    made: dict = {t: {} for t in TABLES}
    for t in TABLES:
        content = tables[t].drop("id", "source", "row", "split").to_dicts()
        for row, record in zip(tables[t]["row"].to_list(), content):
            made[t].setdefault(row, []).append(record)
    return [{t: made[t].get(row, []) for t in TABLES} for row in rows]


def row_keys(fmt: str, raw_rows) -> list[str]:
    """The `row` of each good row, given where each landed in the raw table."""
    column = FORMATS[fmt].id_column
    return [str(row[column]) if column else str(at) for row, at in zip(GOOD_ROWS[fmt], raw_rows)]


ALONE: dict[str, list[dict]] = {}


def alone(tmp_path, fmt: str) -> list[dict]:
    """The good rows' records when their file holds nothing else."""
    if fmt not in ALONE:
        good = GOOD_ROWS[fmt]
        _, tables, _ = through_the_file(tmp_path, fmt, b"".join(json_line(r) + b"\n" for r in good))
        ALONE[fmt] = outcomes(tables, row_keys(fmt, range(len(good))))
        assert all(any(made.values()) for made in ALONE[fmt]), f"a good {fmt} row is not used on its own"
    return ALONE[fmt]


def test_every_format_has_good_rows_and_random_rows():
    assert sorted(GOOD_ROWS) == sorted(ROWS) == sorted(FORMATS)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=30, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_file_keeps_every_good_row_and_accounts_for_every_line(tmp_path, fmt, data):
    good = GOOD_ROWS[fmt]
    bad = data.draw(st.lists(bad_lines(fmt), min_size=1, max_size=10))
    order = data.draw(st.permutations([("good", i) for i in range(len(good))] + [("bad", b) for b in bad]))
    lines = [json_line(good[x]) if kind == "good" else x for kind, x in order]
    end = data.draw(st.sampled_from([b"\n", b"\r\n"]))
    head = data.draw(st.sampled_from([b"", BOM]))
    body = head + end.join(lines) + (end if data.draw(st.booleans()) else b"")
    raw, tables, metrics = through_the_file(tmp_path, fmt, body)

    kept = [is_row(line, first=i == 0) for i, line in enumerate([head + lines[0]] + lines[1:])]
    assert raw.height == sum(kept) == metrics["sources"]["src"]["rows"]
    used = set().union(*(set(tables[t]["row"].to_list()) for t in TABLES))
    rejects = tables["rejects"]
    assert rejects["row"].is_unique().all(), "a row rejected twice"
    assert not used & set(rejects["row"]), "a row both used and rejected"
    assert len(used) + rejects.height == raw.height, "a row neither used nor rejected"
    assert all(reason.strip() for reason in rejects["reason"])

    at = {x: sum(kept[:i]) for i, (kind, x) in enumerate(order) if kind == "good"}  # good row -> raw row
    assert outcomes(tables, row_keys(fmt, [at[i] for i in range(len(good))])) == alone(tmp_path, fmt)


# ------------------------------------------------------------------------------ a CSV file (the LMSYS arena's)

LMSYS_COLUMNS = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b",
                 "winner_tie"]


def csv_record(fields: list) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(["" if f is None else f for f in fields])
    return out.getvalue().encode()


def good_csv(row: dict) -> bytes:
    return csv_record([row.get(c, "m") for c in LMSYS_COLUMNS])


def bad_records() -> st.SearchStrategy[bytes]:
    good = st.sampled_from(GOOD_ROWS["arena_lmsys"]).map(good_csv)
    text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
    return st.one_of(
        st.builds(lambda line, at, byte: splice(line[:-1], at, byte) + b"\n", good, st.integers(0, 10**4),
                  st.sampled_from([b"\xff", b"\xc0", b"\x80"])),  # a record that is not UTF-8
        good.map(lambda line: csv_record(next(csv.reader([line.decode()]))[:-2])),  # fields missing
        good.map(lambda line: csv_record(next(csv.reader([line.decode()])) + ["extra"])),  # a field too many
        st.lists(text, min_size=len(LMSYS_COLUMNS), max_size=len(LMSYS_COLUMNS)).map(
            lambda fields: csv_record([f"x{fields[0]}", *fields[1:]])))  # any text, an id no good row has


@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_csv_keeps_every_good_record_and_accounts_for_every_record(tmp_path, data):
    good = GOOD_ROWS["arena_lmsys"]
    bad = data.draw(st.lists(bad_records(), min_size=1, max_size=8))
    order = data.draw(st.permutations([("good", i) for i in range(len(good))] + [("bad", b) for b in bad]))
    body = csv_record(LMSYS_COLUMNS) + b"".join(good_csv(good[x]) if kind == "good" else x for kind, x in order)
    path = tmp_path / "src.csv"
    path.write_bytes(body)
    frame, json_columns = read_source({"path": str(path), "format": "arena_lmsys"}, "src")
    write_raw(frame, json_columns, tmp_path / "raw.parquet")
    raw = read_raw(tmp_path / "raw.parquet")
    tables, metrics = clean({"src": ("arena_lmsys", raw)}, FILE_PARAMS)[:2]
    assert raw.height == len(order) == metrics["sources"]["src"]["rows"]
    used = set().union(*(set(tables[t]["row"].to_list()) for t in TABLES))
    rejects = tables["rejects"]
    assert not used & set(rejects["row"]) and len(used) + rejects.height == raw.height
    assert outcomes(tables, [str(r["id"]) for r in good]) == [
        {t: made for t, made in outcome.items()} for outcome in alone_csv(tmp_path)]


def alone_csv(tmp_path) -> list[dict]:
    path = tmp_path / "alone.csv"
    path.write_bytes(csv_record(LMSYS_COLUMNS) + b"".join(good_csv(r) for r in GOOD_ROWS["arena_lmsys"]))
    frame, json_columns = read_source({"path": str(path), "format": "arena_lmsys"}, "alone")
    write_raw(frame, json_columns, tmp_path / "alone.parquet")
    tables = clean({"src": ("arena_lmsys", read_raw(tmp_path / "alone.parquet"))}, FILE_PARAMS)[0]
    made = outcomes(tables, [str(r["id"]) for r in GOOD_ROWS["arena_lmsys"]])
    assert all(outcome["arena"] for outcome in made)
    return made
