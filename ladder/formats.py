"""Parsers from each source format (DESIGN.md, "Data sources") to the unified records.

A parser takes the raw table as fetch wrote it and returns record tables plus rejects. A row that
cannot be parsed is rejected with a reason; a missing column is an error naming it. Speakers are
assigned by name, never by position; swiped (" (deleted)") replies never stay inside a conversation;
line ends become LF, the characters themselves are kept as they are.

chai_feedback is the large source (70k rows real, 200k in the benchmark) and is parsed with polars
expressions; the other formats are small or text-shaped and are parsed row by row.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl

from ladder.records import INVALID_JSON, TABLES, frame, normalize_text, stable_id

USER = "Anonymous user"
DELETED = " (deleted)"
ROLE_ALIASES = {
    "system": "system",
    "user": "user", "human": "user", "anonymous user": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "char": "assistant", "character": "assistant",
}


class Malformed(ValueError):
    """A source row that cannot become a record; its message is the reject reason."""


@dataclass
class Parsed:
    tables: dict[str, pl.DataFrame]
    rejects: list[dict]
    dropped: Counter = field(default_factory=Counter)  # records not made from rows that were still used


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]
    id_column: str | None
    parse: Callable[..., Parsed]


def raw_json(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


# ---------------------------------------------------------------- shared pieces of the row parsers

def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} is not text ({type(value).__name__})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud83d" escape: no UTF-8 file can hold it
        raise Malformed(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise Malformed(f"{what} is not a list ({type(value).__name__})")
    if not value:
        raise Malformed(f"{what} is empty")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise Malformed(f"{what} is not a boolean ({value!r})")
    return value


def finish_messages(turns: list[tuple[str, str]]) -> list[dict]:
    """Normalise (role, text) turns: LF line ends, no empty turn, consecutive same-role turns joined
    by a blank line (a real one: the Chai code wrote a literal "/n/n")."""
    messages: list[dict] = []
    for i, (role, text) in enumerate(turns):
        content = normalize_text(text)
        if not content:
            raise Malformed(f"empty {role} message at turn {i}")
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def speaker_lines(text: str, speakers: dict[str, str | None], what: str) -> list[tuple[str | None, str]]:
    """Split "Name: text" lines into turns; a line without a known speaker continues the previous
    turn, so multi-line messages stay whole. A speaker mapped to None (a swiped reply) is kept as a
    turn with role None for the caller to drop."""
    names = "|".join(re.escape(n) for n in sorted(speakers, key=len, reverse=True))
    head = re.compile(rf"^({names}):[ \t]?(.*)$")
    turns: list[tuple[str | None, list[str]]] = []
    for line in normalize_text(text).split("\n"):
        match = head.match(line)
        if match:
            turns.append((speakers[match.group(1)], [match.group(2)]))
        elif turns:
            turns[-1][1].append(line)
        elif line.strip():
            raise Malformed(f"{what}: text before the first speaker")
    if not turns:
        raise Malformed(f"{what}: no speaker line")
    return [(role, "\n".join(lines)) for role, lines in turns]


def role_turns(items: list, role_key: str, content_key: str, what: str) -> list[tuple[str, str]]:
    turns = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed(f"{what}[{i}] is not an object")
        role = ROLE_ALIASES.get(str(item.get(role_key)).strip().lower())
        if role is None:
            raise Malformed(f"{what}[{i}]: unknown role {item.get(role_key)!r}")
        turns.append((role, _text(item.get(content_key), f"{what}[{i}].{content_key}")))
    return turns


def conversation(messages: list[dict], what: str = "conversation") -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise Malformed(f"{what} has no assistant message")
    return messages


# ---------------------------------------------------------------- the row parsers

def chai_prize_flat_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    text = normalize_text(_text(row["conversation"], "conversation"))
    turns: list[tuple[str | None, str]] = []
    persona = re.match(r"(?s)\s*([^\n]*?)'s Persona:.*?<START>", text)
    if persona:
        bot = persona.group(1).strip()
        turns.append(("system", persona.group(0)[: -len("<START>")]))
        text = text[persona.end():]
    else:
        first = next((line for line in text.split("\n") if line.strip()), "")
        bot = first.split(":", 1)[0].strip() if ":" in first else ""
    if not bot or bot == USER or bot.endswith(DELETED):
        raise Malformed("conversation: cannot tell the bot's name (no persona header, no kept greeting)")
    turns += speaker_lines(text, {USER: "user", bot: "assistant", bot + DELETED: None}, "conversation")
    messages = conversation(finish_messages([(r, t) for r, t in turns if r is not None]))
    label = float(_bool(row["thumbs_up"], "thumbs_up"))
    return [("feedback", {"messages": messages, "label": label})]


def chatml_conversation_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    items = _list(row["conversation"], "conversation")
    turns: list[tuple[str, str]] = []
    system = row.get("system")  # the older revision keeps the persona apart: {from, value}
    if isinstance(system, dict) and system.get("value"):
        turns.append(("system", _text(system["value"], "system.value")))
    if all(isinstance(i, dict) and "content" in i for i in items):
        turns += role_turns(items, "role", "content", "conversation")
    else:
        role_key = "role_type" if all(isinstance(i, dict) and i.get("role_type") for i in items) else "from"
        turns += role_turns(items, role_key, "value", "conversation")
    return [("conversations", {"messages": conversation(finish_messages(turns)), "thumbs_up": None})]


def messages_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    turns = role_turns(_list(row["messages"], "messages"), "role", "content", "messages")
    return [("conversations", {"messages": conversation(finish_messages(turns)), "thumbs_up": None})]


def role_prefixed_text_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    speakers = {"SYSTEM": "system", "USER": "user", "ASSISTANT": "assistant"}
    turns = speaker_lines(_text(row["text"], "text"), speakers, "text")
    return [("conversations", {"messages": conversation(finish_messages(turns)), "thumbs_up": None})]


_ZEPHYR = re.compile(r"<\|(system|user|assistant)\|>(.*?)(?:</s>|(?=<\|(?:system|user|assistant)\|>)|\Z)", re.S)


def zephyr_text_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    text = normalize_text(_text(row["text"], "text"))
    turns, end = [], 0
    for match in _ZEPHYR.finditer(text):
        if text[end:match.start()].strip():
            raise Malformed("text: text outside <|role|> blocks")
        turns.append((match.group(1), match.group(2)))
        end = match.end()
    if text[end:].strip() or not turns:
        raise Malformed("text: text outside <|role|> blocks")
    return [("conversations", {"messages": conversation(finish_messages(turns)), "thumbs_up": None})]


def chai_dpo_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    turns, bot = [], None
    for i, item in enumerate(_list(row["history"], "history")):
        if not isinstance(item, dict):
            raise Malformed(f"history[{i}] is not an object")
        sender = _text(item.get("sender"), f"history[{i}].sender").strip()
        role = ROLE_ALIASES.get(sender.lower())
        if role is None:  # a character name: the bot is whoever speaks first that is not the user
            bot = bot or sender
            if sender != bot:
                raise Malformed(f"history[{i}]: unknown speaker {sender!r} (bot is {bot!r})")
            role = "assistant"
        turns.append((role, _text(item.get("value"), f"history[{i}].value")))
    prompt = finish_messages(turns)
    if prompt[-1]["role"] != "user":
        raise Malformed("history does not end with a user message")
    chosen = normalize_text(_text(row["accepted"], "accepted"))
    if not chosen:
        raise Malformed("accepted is empty")
    rejected = row["rejected"]
    rejected = [rejected] if isinstance(rejected, str) else _list(rejected, "rejected")
    replies = [normalize_text(_text(r, f"rejected[{i}]")) for i, r in enumerate(rejected)]
    replies = list(dict.fromkeys(r for r in replies if r and r != chosen))
    if not replies:
        raise Malformed("no rejected reply that differs from accepted")
    return [("preferences", {"prompt": prompt, "chosen": chosen, "rejected": r}) for r in replies]


def _arena(prompt: str, a: str, b: str, winner: str, language: Any) -> list[tuple[str, dict]]:
    prompt, a, b = normalize_text(prompt), normalize_text(a), normalize_text(b)
    if not prompt:
        raise Malformed("prompt is empty")
    if not (a or b):
        raise Malformed("both responses are empty")
    language = language if isinstance(language, str) and language.strip() else None
    return [("arena", {"prompt": prompt, "response_a": a, "response_b": b, "winner": winner,
                       "language": language})]


def arena_wsdm_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    winner = row["winner"]
    if winner is None:
        raise Malformed("winner is missing (an unlabelled test row)")
    if winner not in ("model_a", "model_b", "tie"):
        raise Malformed(f"winner {winner!r} is not model_a, model_b or tie")
    return _arena(_text(row["prompt"], "prompt"), _text(row["response_a"], "response_a"),
                  _text(row["response_b"], "response_b"), winner, row.get("language"))


def _turn_list(value: Any, what: str) -> str:
    """LMSYS keeps each side as a JSON-encoded list of turns, where a turn may be null."""
    turns = value
    if not isinstance(value, list):
        try:
            turns = json.loads(_text(value, what))
        except json.JSONDecodeError as err:
            raise Malformed(f"{what} is not a JSON list ({err.msg})") from None
    if isinstance(turns, str):
        turns = [turns]
    if not isinstance(turns, list) or not all(t is None or isinstance(t, str) for t in turns):
        raise Malformed(f"{what} is not a list of text turns")
    return "\n\n".join(normalize_text(_text(t, what)) for t in turns if t and t.strip())


def arena_lmsys_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    flags = {}
    for name in ("model_a", "model_b", "tie"):
        value = row[f"winner_{name}"]
        if value not in (0, 1) or isinstance(value, float) and value != int(value):
            raise Malformed(f"winner_{name} is not 0 or 1 ({value!r})")
        flags[name] = int(value)
    if sum(flags.values()) != 1:
        raise Malformed(f"winner flags are not one-hot ({flags})")
    winner = next(name for name, flag in flags.items() if flag)
    return _arena(_turn_list(row["prompt"], "prompt"), _turn_list(row["response_a"], "response_a"),
                  _turn_list(row["response_b"], "response_b"), winner, row.get("language"))


def parse_rows(df: pl.DataFrame, source: str, fmt: Format, options: dict,
               row_parser: Callable[[dict, dict], list[tuple[str, dict]]]) -> Parsed:
    records: dict[str, list[dict]] = {t: [] for t in TABLES}
    rejects: list[dict] = []
    seen: set[str] = set()
    for index, row in enumerate(df.iter_rows(named=True)):
        row_id = str(index) if fmt.id_column is None else row[fmt.id_column]
        try:
            if row.get(INVALID_JSON) is not None:
                raise Malformed("not a JSON object, or not valid Unicode (kept as the source line)")
            if row_id is None:
                raise Malformed(f"{fmt.id_column} is missing")
            row_id = str(row_id)
            if row_id in seen:
                row_id = f"{row_id}@{index}"  # a reject's row key must not collide with the kept row's
                raise Malformed(f"duplicate {fmt.id_column} (row {index})")
            seen.add(row_id)
            made = row_parser(row, options)
        except Malformed as err:
            rejects.append({"source": source, "row": f"@{index}" if row_id is None else str(row_id),
                            "reason": str(err), "raw": raw_json(row)})
            continue
        for k, (table, record) in enumerate(made):
            records[table].append({"id": stable_id(source, row_id, table, k), "source": source,
                                   "row": row_id, **record})
    return Parsed({t: frame(t, rows) for t, rows in records.items()}, rejects)


def _row_format(name: str, required: tuple[str, ...], id_column: str | None, row_parser) -> Format:
    def parse(df, source, options):
        return parse_rows(df, source, FORMATS[name], options, row_parser)
    return Format(name, required, id_column, parse)


def _chai_feedback(df: pl.DataFrame, source: str, options: dict) -> Parsed:
    from ladder.chai_feedback import parse_chai_feedback
    return parse_chai_feedback(df, source, options)


FORMATS: dict[str, Format] = {
    "chai_feedback": Format("chai_feedback", ("_id", "conversation", "thumbs_up"), "_id", _chai_feedback),
    "chai_prize_flat": _row_format("chai_prize_flat", ("conversation_id", "conversation", "thumbs_up"),
                                   "conversation_id", chai_prize_flat_row),
    "chatml_conversation": _row_format("chatml_conversation", ("conversation",), None, chatml_conversation_row),
    "messages": _row_format("messages", ("messages",), None, messages_row),
    "role_prefixed_text": _row_format("role_prefixed_text", ("text",), None, role_prefixed_text_row),
    "zephyr_text": _row_format("zephyr_text", ("text",), None, zephyr_text_row),
    "chai_dpo": _row_format("chai_dpo", ("history", "accepted", "rejected"), None, chai_dpo_row),
    "arena_wsdm": _row_format("arena_wsdm", ("id", "prompt", "response_a", "response_b", "winner"), "id",
                              arena_wsdm_row),
    "arena_lmsys": _row_format("arena_lmsys", ("id", "prompt", "response_a", "response_b", "winner_model_a",
                                               "winner_model_b", "winner_tie"), "id", arena_lmsys_row),
}


def parse_source(df: pl.DataFrame, source: str, format_name: str, options: dict, file: str = "") -> Parsed:
    """Parse one raw source table. A missing column stops here, naming source, column and file."""
    if format_name not in FORMATS:
        raise ValueError(f"source {source!r}: unknown format {format_name!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[format_name]
    for column in fmt.required:
        if column not in df.columns:
            raise ValueError(f"source {source!r} ({format_name}): column {column!r} is missing in "
                             f"{file or 'its raw table'}; columns there: {', '.join(df.columns) or 'none'}")
    return fmt.parse(df, source, options)
