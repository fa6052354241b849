"""Reading sources (local files and hub snapshots laid out as the hub lays them out), params, atomic writes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ladder.errors import InputError
from ladder.io import atomic_path
from ladder.params import read_yaml
from ladder.data.sources import MAX_DEPTH, hf_token, read_file, read_raw, read_source, split_files, write_raw
from ladder.data.cleaning import clean

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"history": [{"sender": "Bot", "value": "Hi"}, {"sender": "user", "value": "Yo"}], "accepted": "Hey you",
         "rejected": ["meh", "ok"]},
        {"history": [{"sender": "Bot", "value": "Hi"}, {"sender": "user", "value": "Sup"}], "accepted": "Ahoy",
         "rejected": "nah"}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_file_type_keeps_the_source_columns(tmp_path, suffix):
    rows = [{"id": "a", "prompt": "p", "n": 1}, {"id": "b", "prompt": "q ünï", "n": 2}]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps({"data": rows}))
    elif suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(path)
    else:
        pl.DataFrame(rows).write_csv(path)
    frame, encoded = read_file(path)
    assert frame.columns == ["id", "prompt", "n"] and encoded == []
    assert frame.to_dicts() == rows


def test_mixed_type_column_round_trips_through_the_raw_table(tmp_path):
    path = tmp_path / "dpo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "{not json\n")
    frame, encoded = read_source({"format": "chai_dpo", "path": str(path)}, "dpo")
    assert encoded == ["rejected"]
    write_raw(frame, encoded, tmp_path / "raw.parquet")
    back = read_raw(tmp_path / "raw.parquet")
    assert back["rejected"].to_list()[:2] == [["meh", "ok"], "nah"]
    tables, metrics, *_ = clean({"dpo": ("chai_dpo", back)}, {
        "seed": 0, "eval_fraction": 0.0, "min_turns": 1, "min_message_chars": 1, "max_message_chars": 100,
        "min_conversation_chars": 1, "max_conversation_chars": 1000, "sft_requires_thumbs_up": True,
        "swipe_pairs": True, "arena_languages": [], "dedup": True, "mix": {}})
    assert tables["preferences"]["rejected"].to_list() == ["meh", "ok", "nah"]
    # The line that was not JSON is a row of its own, rejected with a reason rather than lost.
    [reject] = tables["rejects"].to_dicts()
    assert reject["row"] == "2" and reject["reason"].startswith("not valid JSON") and "not json" in reject["raw"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        read_source({"format": "messages", "path": str(tmp_path / "nowhere.jsonl")}, "x")


def hub_cache(root: Path, repo: str, commit: str) -> Path:
    """A dataset snapshot in the local hub cache, laid out exactly as huggingface_hub lays it out."""
    snapshot = root / f"datasets--{repo.replace('/', '--')}" / "snapshots" / commit
    (snapshot / "data").mkdir(parents=True)
    (root / f"datasets--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"datasets--{repo.replace('/', '--')}" / "refs" / "main").write_text(commit)
    for shard, rows in enumerate([ROWS[:1], ROWS[1:]]):
        (snapshot / "data" / f"train-0000{shard}-of-00002.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    (snapshot / "data" / "test-00000-of-00001.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (snapshot / "README.md").write_text("# card\n")
    return snapshot


def test_split_files_pick_the_split(tmp_path):
    snapshot = hub_cache(tmp_path, "org/chai-dpo", "c" * 40)
    assert [p.name for p in split_files(snapshot, "train")] == ["train-00000-of-00002.jsonl",
                                                                "train-00001-of-00002.jsonl"]
    assert [p.name for p in split_files(snapshot, "test")] == ["test-00000-of-00001.jsonl"]
    with pytest.raises(FileNotFoundError, match="validation"):
        split_files(snapshot, "validation")


def test_fetch_stage_reads_a_pinned_hub_snapshot_offline(tmp_path, write_params):
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub_cache(tmp_path / "hub", "org/chai-dpo", commit)
    work = tmp_path / "work"
    work.mkdir()
    write_params(work / "params.yaml", {"fetch": {"hub_sources": {
        "dpo": {"format": "chai_dpo", "hub": "org/chai-dpo", "revision": commit, "split": "train"}}}})
    (work / ".env").write_text("HF_TOKEN=hf_secret_value_123\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "stages.fetch", "--source", "dpo"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    back = read_raw(work / "data/raw/dpo.parquet")
    assert back.height == 2 and back["accepted"].to_list() == ["Hey you", "Ahoy"]
    assert "hf_secret_value_123" not in done.stdout + done.stderr
    assert b"hf_secret_value_123" not in (work / "data/raw/dpo.parquet").read_bytes()


def test_hub_source_needs_a_pinned_revision():
    with pytest.raises(ValueError, match="revision"):
        read_source({"format": "chai_dpo", "hub": "org/x"}, "x")


def test_hf_token_from_env_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hf_token(tmp_path / ".env") is None
    (tmp_path / ".env").write_text("HF_TOKEN=hf_abc\n")
    assert hf_token(tmp_path / ".env") == "hf_abc"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert hf_token(tmp_path / ".env") == "hf_env"


def test_params_are_read_as_yaml_1_2(tmp_path):
    (tmp_path / "params.yaml").write_text("sft:\n  lr: 3e-05\n  on: yes\n")
    params = read_yaml(tmp_path / "params.yaml")
    assert params["sft"]["lr"] == pytest.approx(3e-5) and isinstance(params["sft"]["lr"], float)
    assert params["sft"]["on"] == "yes"  # YAML 1.2: only true/false are booleans


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "model"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("whole")
    assert (target / "weights").read_text() == "whole"


def test_a_line_that_no_utf8_file_can_hold_is_kept_and_rejected(tmp_path):
    path = tmp_path / "m.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(good) + "\n" + '{"messages": [{"role": "user", "content": "bad \\ud83d"}]}\n')
    frame, encoded = read_source({"format": "messages", "path": str(path)}, "m")
    write_raw(frame, encoded, tmp_path / "raw.parquet")
    tables, *_ = clean({"m": ("messages", read_raw(tmp_path / "raw.parquet"))}, {
        "seed": 0, "eval_fraction": 0.0, "min_turns": 1, "min_message_chars": 1, "max_message_chars": 100,
        "min_conversation_chars": 1, "max_conversation_chars": 1000, "sft_requires_thumbs_up": True,
        "swipe_pairs": True, "arena_languages": [], "dedup": True, "mix": {}})
    assert tables["conversations"]["row"].to_list() == ["0"]
    assert tables["rejects"]["row"].to_list() == ["1"] and "Unicode" in tables["rejects"]["reason"][0]


def test_shards_that_disagree_on_a_column_type_make_one_table(tmp_path):
    snapshot = tmp_path / "snap"
    (snapshot / "data").mkdir(parents=True)
    (snapshot / "data" / "train-00000-of-00002.jsonl").write_text(json.dumps(ROWS[1]) + "\n")  # rejected: str
    (snapshot / "data" / "train-00001-of-00002.jsonl").write_text(json.dumps(ROWS[0]) + "\n")  # rejected: list
    (snapshot / "dataset_infos.json").write_text("{}")
    frame, encoded = read_source({"format": "chai_dpo", "hub": "o/x", "revision": "r", "split": "train"}, "x",
                                 downloader=lambda *a: snapshot)
    write_raw(frame, encoded, tmp_path / "raw.parquet")
    assert read_raw(tmp_path / "raw.parquet")["rejected"].to_list() == ["nah", ["meh", "ok"]]


LMSYS_COMMIT = "c6b52a405ac17fa4c18b6683051631ff95929828"
LMSYS_HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b",
                "winner_tie"]


def test_the_lmsys_arena_hub_mirror_fetches_and_parses_as_arena_lmsys(tmp_path, write_params):
    """lmsys/lmsys-arena-human-preference-55k keeps the Kaggle file as it is: train.csv at the top of the
    repository beside README.md (no data/ folder, no parquet), turns as JSON-encoded lists that may hold null."""
    import csv

    from ladder.data.formats import parse_source

    repo = tmp_path / "hub" / "datasets--lmsys--lmsys-arena-human-preference-55k"
    snapshot = repo / "snapshots" / LMSYS_COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(LMSYS_COMMIT)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    rows = [[30192, "gpt-4-1106-preview", "gpt-4-0613", json.dumps(["Is it right?", "And pineapple, on pizza?"]),
             json.dumps(["Yes, \"mostly\",\nwith care.", "Sure!"]), json.dumps(["It depends.", None]), 1, 0, 0],
            [53567, "koala-13b", "gpt-4-0613", json.dumps(["Explain ünïcode, please"]), json.dumps([None]),
             json.dumps(["Unicode maps characters to numbers."]), 0, 1, 0],
            [65089, "gpt-3.5-turbo-0613", "mistral-medium", json.dumps(["Hi"]), json.dumps(["Hello"]),
             json.dumps(["Hey"]), 0, 0, 1]]
    with open(snapshot / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(LMSYS_HEADER)
        writer.writerows(rows)
    work = tmp_path / "work"
    work.mkdir()
    spec = read_yaml(REPO / "recipes" / "wsdm.yaml")["fetch"]["hub_sources"]["lmsys"]  # the entry the recipe ships
    assert (spec["hub"], spec["revision"]) == ("lmsys/lmsys-arena-human-preference-55k", LMSYS_COMMIT)
    write_params(work / "params.yaml", {"fetch": {"sources": {"lmsys": None}, "hub_sources": {"lmsys": spec}}})
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "stages.fetch", "--source", "lmsys"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    raw = read_raw(work / "data/raw/lmsys.parquet")
    assert raw.columns == LMSYS_HEADER and raw["id"].to_list() == [30192, 53567, 65089]
    parsed = parse_source(raw, "lmsys", "arena_lmsys", {}, file="data/raw/lmsys.parquet")
    arena = parsed.tables["arena"].to_dicts()
    assert [(r["row"], r["winner"]) for r in arena] == [("30192", "model_a"), ("53567", "model_b"), ("65089", "tie")]
    assert arena[0]["prompt"] == "Is it right?\n\nAnd pineapple, on pizza?"
    assert arena[0]["response_a"] == 'Yes, "mostly",\nwith care.\n\nSure!' and arena[0]["response_b"] == "It depends."
    assert arena[1]["response_a"] == "" and parsed.rejects == []


def test_files_pick_one_config_of_a_repository_that_holds_two(tmp_path):
    """chai-dpo's later commits hold a second config (`unrolled`, `rejected` a string) whose train files the
    split alone would read as well; `files` picks one config's files, for the download and the read alike."""
    snapshot = tmp_path / "snap"
    for folder, rows in (("data", ROWS[:1]), ("unrolled", ROWS[1:])):
        (snapshot / folder).mkdir(parents=True)
        pl.DataFrame(rows).write_parquet(snapshot / folder / "train-00000-of-00001.parquet")
    asked = []

    def downloader(*args):
        asked.append(args)
        return snapshot

    spec = {"format": "chai_dpo", "hub": "o/x", "revision": "r", "split": "train"}
    both, _ = read_source(spec, "x", downloader=downloader)
    assert both.height == 2
    one, _ = read_source({**spec, "files": "data/*"}, "x", downloader=downloader)
    assert one["accepted"].to_list() == ["Hey you"] and asked[-1][-1] == ["data/*"]
    with pytest.raises(FileNotFoundError, match="among"):
        read_source({**spec, "files": ["default/*"]}, "x", downloader=downloader)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_chatml_rows_of_both_revisions_survive_the_raw_table(tmp_path, suffix):
    """A file holding rows of both gpt-roleplay-realm-chatml revisions, through fetch's read and write and
    clean's read: the raw table carries every field of both, null where a row's revision has none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ladder.data.formats import parse_source

    rows = [{"conversation": [{"content": "You are Vex.", "do_train": False, "role": "system"},
                              {"content": "Obviously.", "do_train": True, "role": "assistant"},
                              {"content": "hi", "do_train": False, "role": "user"},
                              {"content": "Hm.", "do_train": True, "role": "assistant"}]},
            {"system": {"from": "system", "value": "You are Vex."},
             "conversation": [{"from": "Vex", "role_type": "char", "value": "Obviously."},
                              {"from": "User", "role_type": "user", "value": "hi"},
                              {"from": "Vex", "role_type": "char", "value": "Hm."}]}]
    path = tmp_path / f"realm{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_struct_array(pa.array(rows)), path)  # one schema over all rows, as datasets writes
    frame, encoded = read_source({"format": "chatml_conversation", "path": str(path)}, "realm")
    write_raw(frame, encoded, tmp_path / "raw.parquet")
    raw = read_raw(tmp_path / "raw.parquet")
    assert encoded == [] and raw["system"].to_list()[0] is None  # one struct type: the old fields are null
    parsed = parse_source(raw, "realm", "chatml_conversation", {}, file="raw.parquet")
    assert parsed.rejects == []
    assert [[m["role"] for m in c] for c in parsed.tables["conversations"]["messages"].to_list()] == \
        [["system", "assistant", "user", "assistant"]] * 2


# ------------------------------------------------------------------ lines, bytes and files that are not what they claim

CLEAN = {"seed": 0, "eval_fraction": 0.0, "min_turns": 1, "min_message_chars": 1, "max_message_chars": 100,
         "min_conversation_chars": 1, "max_conversation_chars": 1000, "sft_requires_thumbs_up": True,
         "swipe_pairs": True, "arena_languages": [], "dedup": False, "mix": {}}
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def through_clean(tmp_path, path: Path, fmt: str = "messages"):
    frame, encoded = read_source({"format": fmt, "path": str(path)}, "s")
    write_raw(frame, encoded, tmp_path / "raw.parquet")
    raw = read_raw(tmp_path / "raw.parquet")
    tables, *_ = clean({"s": (fmt, raw)}, CLEAN)
    return raw, tables, dict(zip(tables["rejects"]["row"], tables["rejects"]["reason"]))


def test_json_lines_are_split_on_newline_only(tmp_path):
    """U+2028, U+0085 and the like are line breaks to str.splitlines but characters inside a JSON string."""
    odd = ["\u2028", "\u2029", "\x85", "\ufeff", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
    rows = [{"messages": [{"role": "user", "content": f"a{c}b{i}"}, {"role": "assistant", "content": f"o{c}k"}]}
            for i, c in enumerate(odd * 2 + odd[:2])]
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines[:10]) + b"\r\n \t\r\n\n" + b"\n".join(lines[10:]) + b"\n")
    raw, tables, rejects = through_clean(tmp_path, path)
    assert len(rows) == 20 and raw.height == 20 and rejects == {}
    assert raw["messages"].to_list() == [r["messages"] for r in rows]
    assert tables["conversations"]["messages"].to_list() == [r["messages"] for r in rows]


def test_a_line_that_is_not_utf8_is_one_rejected_row(tmp_path):
    path = tmp_path / "m.jsonl"
    line = json.dumps(GOOD).encode()
    path.write_bytes(line + b"\n" + line.replace(b"hello", b"hel\xfflo") + b"\n" + line + b"\n")
    raw, tables, rejects = through_clean(tmp_path, path)
    assert raw.height == 3 and sorted(tables["conversations"]["row"]) == ["0", "2"]
    assert list(rejects) == ["1"] and "not valid UTF-8" in rejects["1"]
    assert "hel\\\\xfflo" in tables["rejects"]["raw"][0]  # the source line's bytes survive, escaped


def nested(depth: int, inner=0):
    for _ in range(depth):
        inner = [inner]
    return inner


@pytest.mark.parametrize("depth", [MAX_DEPTH, 100, 5000])
def test_a_line_nested_too_deep_is_one_rejected_row(tmp_path, depth):
    path = tmp_path / "m.jsonl"
    deep = '{"messages": [], "deep": ' + "[" * depth + "]" * depth + "}"
    path.write_text(json.dumps(GOOD) + "\n" + deep + "\n" + json.dumps(GOOD) + "\n")
    raw, tables, rejects = through_clean(tmp_path, path)
    assert raw.height == 3 and sorted(tables["conversations"]["row"]) == ["0", "2"]
    assert rejects == {"1": f"nested deeper than {MAX_DEPTH} levels"}


def test_a_record_as_deep_as_allowed_round_trips_through_the_raw_table(tmp_path):
    rows = [{**GOOD, "deep": nested(MAX_DEPTH - 1)}, {**GOOD, "deep": {"a": nested(MAX_DEPTH - 2)}}]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw, tables, rejects = through_clean(tmp_path, path)
    assert rejects == {} and raw["deep"].to_list() == [r["deep"] for r in rows]


@pytest.mark.parametrize("line, reason", [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    ('[{"messages": []}]', "a JSON array, not an object"),
    ('"text"', "a JSON string, not an object"),
    ("null", "a JSON null, not an object"),
    ('{"messages": [{"role": "user", "content": "bad \\ud83d"}]}', "not valid Unicode"),
])
def test_an_invalid_line_is_rejected_with_its_own_reason(tmp_path, line, reason):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    raw, tables, rejects = through_clean(tmp_path, path)
    assert tables["conversations"]["row"].to_list() == ["0"]
    assert list(rejects) == ["1"] and rejects["1"].startswith(reason)
    assert json.loads(tables["rejects"]["raw"][0])["_invalid_json"] == line


def test_an_invalid_line_among_chai_rows_of_mixed_types_keeps_its_reason(tmp_path):
    """A `conversation` column of mixed types is checked row by row: that check must not blank out the reason
    an earlier check gave the row (it was then rejected as "_id is missing")."""
    good = {"_id": "a", "conversation": [{"name": "Bot", "text": "hi"}, {"name": "Anonymous user", "text": "yo"},
                                         {"name": "Bot", "text": "hey"}], "thumbs_up": True}
    odd = {"_id": "b", "conversation": "not a list", "thumbs_up": True}
    path = tmp_path / "chai.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(odd) + "\n{broken\n")
    raw, tables, rejects = through_clean(tmp_path, path, "chai_feedback")
    assert tables["conversations"]["row"].to_list() == ["a"]
    assert rejects["b"].startswith("conversation is not a list")
    assert rejects["@2"].startswith("not valid JSON")


def test_mixed_integer_and_float_ids_keep_their_own_types(tmp_path):
    """pyarrow would read [1, 2.5] as floats: the integer id 1 would become "1.0", or be refused as a float."""
    rows = [{"id": 1, "prompt": "p", "response_a": "a", "response_b": "b", "winner": "model_a"},
            {"id": 2.5, "prompt": "q", "response_a": "a", "response_b": "b", "winner": "model_b"}]
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw, tables, rejects = through_clean(tmp_path, path, "arena_wsdm")
    assert raw["id"].to_list() == [1, 2.5]
    assert tables["arena"]["row"].to_list() == ["1"] and list(rejects) == ["@1"]


def test_a_boolean_beside_a_float_stays_a_boolean(tmp_path):
    """pyarrow reads [0.0, true] as floats (and refuses [true, 0.0]): the good row's thumbs_up became 1.0."""
    rows = [{"conversation_id": 2, "conversation": "", "thumbs_up": 0.0},
            {"conversation_id": 1, "conversation": "Pip: hi\nAnonymous user: yo\nPip: ok", "thumbs_up": True}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw, tables, rejects = through_clean(tmp_path, path, "chai_prize_flat")
    assert [type(v) for v in raw["thumbs_up"].to_list()] == [float, bool]
    assert tables["feedback"]["label"].to_list() == [1.0] and list(rejects) == ["2"]


@pytest.mark.parametrize("content, cause", [
    (b'[{"a": 1}, {"a": "\xff"}]', "not valid UTF-8"),
    (b'[{"a": 1}, {"a": 2]', "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
    (b"", "not valid JSON"),
])
def test_a_json_file_that_cannot_be_split_into_rows_stops_with_one_line(tmp_path, content, cause):
    path = tmp_path / "data.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_source({"format": "messages", "path": str(path)}, "s")
    assert str(err.value).startswith(f"{path}: ") and cause in str(err.value) and "\n" not in str(err.value)


def test_a_record_of_a_json_list_nested_too_deep_is_one_rejected_row(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'[{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, '
                     b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}]")
    raw, tables, rejects = through_clean(tmp_path, path)
    assert raw.height == 2 and tables["conversations"].height == 1
    assert rejects == {"1": f"nested deeper than {MAX_DEPTH} levels"}


def test_a_csv_record_that_is_not_utf8_or_has_the_wrong_fields_is_one_rejected_row(tmp_path):
    path = tmp_path / "arena.csv"
    path.write_bytes(b"id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"
                     b'1,"[""hi""]","[""a""]","[""b""]",1,0,0\n2,"[""caf\xe9""]","[""a""]","[""b""]",1,0,0\n'
                     b'3,"[""short""]"\n4,"[""q""]","[""a""]","[""b""]",0,1,0\n')
    raw, tables, rejects = through_clean(tmp_path, path, "arena_lmsys")
    assert raw.height == 4 and tables["arena"]["row"].to_list() == ["1", "4"]
    assert sorted(rejects.values()) == ["record has 2 fields, the header 7", "record is not valid UTF-8"]


def test_a_json_file_with_a_bom_and_odd_elements(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"data": [GOOD, [1], {"messages": "x\ud83d"}]}).encode())
    raw, tables, rejects = through_clean(tmp_path, path)
    assert raw.height == 3 and tables["conversations"]["row"].to_list() == ["0"]
    assert rejects["1"] == "a JSON array, not an object" and rejects["2"].startswith("not valid Unicode")


def corrupt_parquet(path: Path) -> None:
    pl.DataFrame({"a": list(range(1000))}).write_parquet(path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("name, make, cause", [
    ("t.parquet", corrupt_parquet, "not a readable parquet file"),
    ("e.parquet", lambda p: p.write_bytes(b""), "not a readable parquet file"),
    ("e.csv", lambda p: p.write_bytes(b""), "not a readable CSV file"),
    ("b.csv", lambda p: p.write_bytes(b"i\xffd,text\n1,a\n"), "not a readable CSV file"),
])
def test_a_corrupt_or_empty_data_file_is_named(tmp_path, name, make, cause):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as err:
        read_source({"format": "messages", "path": str(path)}, "s")
    assert str(err.value).startswith(f"{path}: {cause} (") and "\n" not in str(err.value)


def raw_table_with_invalid_utf8(path: Path) -> None:
    """A raw table whose JSON column's bytes went bad on disk: parquet keeps no checksum that would tell."""
    import pyarrow.parquet as pq

    write_raw(pl.DataFrame({"rejected": ['["ZZZZ"]', '"nah"']}), ["rejected"], path)
    table = pq.read_table(path)
    pq.write_table(table, path, compression="none", use_dictionary=False)
    path.write_bytes(path.read_bytes().replace(b"ZZZZ", b"\xff\xfe\xfd\xfc"))


@pytest.mark.parametrize("make", [corrupt_parquet, lambda p: p.write_bytes(b""), raw_table_with_invalid_utf8])
def test_a_corrupt_raw_table_is_named(tmp_path, make):
    path = tmp_path / "raw.parquet"
    make(path)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: not a readable parquet file \("):
        read_raw(path)
    with pytest.raises(FileNotFoundError):
        read_raw(tmp_path / "missing.parquet")


@pytest.mark.parametrize("fmt", ["messages", "chai_feedback", "arena_wsdm"])
def test_a_file_with_no_record_at_all_rejects_every_line_rather_than_stopping(tmp_path, fmt):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"truncated": \n[1, 2]\n\xff\xfe\n')
    raw, tables, rejects = through_clean(tmp_path, path, fmt)
    assert raw.height == 3 and all(tables[t].is_empty() for t in ("conversations", "preferences", "arena"))
    assert sorted(rejects.values()) == sorted(["not valid JSON (Expecting value at column 15)",
                                               "a JSON array, not an object",
                                               "line is not valid UTF-8 (invalid start byte at byte 0)"])


def test_a_bom_where_two_exported_files_were_joined_is_not_part_of_the_row(tmp_path):
    path = tmp_path / "joined.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n\xef\xbb\xbf" + json.dumps(GOOD).encode()
                     + b"\r\n")
    raw, tables, rejects = through_clean(tmp_path, path)
    assert raw.height == 2 and rejects == {} and tables["conversations"].height == 2
