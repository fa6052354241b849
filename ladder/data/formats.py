"""Parsers from each source format (docs/data.md) to the unified records.

A parser takes the raw table as fetch wrote it and returns record tables plus rejects. A row that
cannot be parsed is rejected with a reason; a missing column is an error naming it. Speakers are
assigned by name wherever the source names them (chai-dpo's histories, whose sender names are not known, are
read as two-party chats: see `two_party_roles`); swiped (" (deleted)") replies never stay inside a
conversation; line ends become LF, the characters themselves are kept as they are.

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

from ladder.errors import InputError
from ladder.data.records import INVALID_JSON, INVALID_REASON, TABLES, frame, normalize_text, stable_id

# A raw table written before INVALID_REASON existed has only INVALID_JSON: this reason stands in for it.
INVALID_LINE = "not a JSON object, or not valid Unicode (kept as the source line)"

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


def id_problem(value: Any, what: str) -> str | None:
    """Why `value` is no row id: ids are text or integers; True is an int to Python but no id, and a float would
    name a row by its rounding ("1.0")."""
    if isinstance(value, str) or isinstance(value, int) and not isinstance(value, bool):
        return None
    return f"{what} is not a string or an integer ({value!r})"


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


def _chatml_layout(item: Any, what: str) -> str:
    """"new" for a {role, content} turn, "old" for a {from, role_type, value} turn, told by the values: a file
    holding rows of both revisions carries every key in every turn, null where the row's revision has none."""
    if not isinstance(item, dict):
        raise Malformed(f"{what} is not an object")
    if item.get("role") is not None or item.get("content") is not None:
        return "new"
    if any(item.get(key) is not None for key in ("from", "role_type", "value")):
        return "old"
    raise Malformed(f"{what} has neither role/content nor from/role_type/value")


def chatml_conversation_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    items = _list(row["conversation"], "conversation")
    layouts = {_chatml_layout(item, f"conversation[{i}]") for i, item in enumerate(items)}
    if len(layouts) > 1:
        raise Malformed("conversation mixes {role, content} and {from, role_type, value} turns")
    turns: list[tuple[str, str]] = []
    system = row.get("system")  # the older revision keeps the persona apart: {from, value}; null in newer rows
    if isinstance(system, dict) and system.get("value") is not None:
        turns.append(("system", _text(system["value"], "system.value")))
    if layouts == {"new"}:
        turns += role_turns(items, "role", "content", "conversation")
        return [("conversations", {"messages": conversation(finish_messages(turns)), "thumbs_up": None})]
    for i, item in enumerate(items):  # role_type where it names a role, else `from` (which may be a name)
        role = ROLE_ALIASES.get(str(item.get("role_type")).strip().lower()) or \
            ROLE_ALIASES.get(str(item.get("from")).strip().lower())
        if role is None:
            raise Malformed(f"conversation[{i}]: unknown role (role_type {item.get('role_type')!r}, "
                            f"from {item.get('from')!r})")
        turns.append((role, _text(item.get("value"), f"conversation[{i}].value")))
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


def two_party_roles(senders: list[str]) -> dict[str, str | None]:
    """The role of each distinct sender of a chai-dpo history, which is a two-party chat whose sender names are
    not known in advance (the bot's name, "Anonymous user", "You", ...):
    - "<name> (deleted)" is a reply of the bot <name> that the user swiped away: dropped (None), and it names the bot;
    - a sender named like a role ("Anonymous user", "user", "bot", "system", ...) has that role;
    - of two speakers, when neither is told by name, the FIRST speaker is the bot: Chai conversations open with
      the bot's greeting. A history must then end with the user, whose turn the accepted and rejected replies
      answer; one that ends with the bot is rejected by the caller rather than read with the roles swapped;
    - a lone speaker not told by name is the bot (the greeting), so the row has no user turn to answer;
    - a third distinct speaker, or two speakers named into the same role, is malformed."""
    roles: dict[str, str | None] = {}
    named: dict[str, str] = {}
    parties: list[str] = []
    for sender in senders:
        if sender.endswith(DELETED) and sender != DELETED.strip():
            roles[sender] = None
            name, role = sender[: -len(DELETED)].strip(), "assistant"
        else:
            name, role = sender, ROLE_ALIASES.get(sender.lower())
        if role == "system":
            roles[sender] = "system"
            continue
        if role:
            if named.setdefault(name, role) != role:
                raise Malformed(f"history: {name!r} speaks both as the {named[name]} and as the {role}")
        if name not in parties:
            parties.append(name)
    if len(parties) > 2:
        raise Malformed(f"history: {len(parties)} speakers in a two-party chat ({', '.join(map(repr, parties))})")
    if len(parties) == 2 and len(named) == 2 and named[parties[0]] == named[parties[1]]:
        raise Malformed(f"history: both speakers ({parties[0]!r}, {parties[1]!r}) read as the {named[parties[0]]}")
    other = {"user": "assistant", "assistant": "user"}
    if len(parties) == 2:
        if named:
            known = next(iter(named))
            named.setdefault(parties[1 - parties.index(known)], other[named[known]])
        else:
            named = {parties[0]: "assistant", parties[1]: "user"}
    elif len(parties) == 1:
        named.setdefault(parties[0], "assistant")
    return {**{s: named[s] for s in senders if s in named}, **roles}


def chai_dpo_row(row: dict, options: dict) -> list[tuple[str, dict]]:
    senders, values = [], []
    for i, item in enumerate(_list(row["history"], "history")):
        if not isinstance(item, dict):
            raise Malformed(f"history[{i}] is not an object")
        senders.append(_text(item.get("sender"), f"history[{i}].sender").strip())
        values.append(_text(item.get("value"), f"history[{i}].value"))
    roles = two_party_roles(senders)
    turns = [(roles[s], v) for s, v in zip(senders, values) if roles[s] is not None]
    if not turns:
        raise Malformed("history holds only swiped replies")
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
        # a CSV column is text to the file: the reader's type guess turns to text when one record is not a number
        if isinstance(value, str) and value.strip() in ("0", "1"):
            value = int(value)
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
                raise Malformed(row.get(INVALID_REASON) or INVALID_LINE)
            if row_id is None:
                raise Malformed(f"{fmt.id_column} is missing")
            problem = id_problem(row_id, fmt.id_column)
            if problem:
                row_id = None  # the reject is keyed by its index, as "True" or "1.0" may be another row's id
                raise Malformed(problem)
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
    from ladder.data.chai_feedback import parse_chai_feedback
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
        raise InputError(f"source {source!r}: unknown format {format_name!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[format_name]
    if INVALID_JSON in df.columns and df.height and df[INVALID_JSON].is_not_null().all():
        # no line was a record: no column is missing from the rows there are, each is rejected for its own reason
        df = df.with_columns(pl.lit(None).alias(c) for c in fmt.required if c not in df.columns)
    for column in fmt.required:
        if column not in df.columns:
            raise InputError(f"source {source!r} ({format_name}): column {column!r} is missing in "
                             f"{file or 'its raw table'}; columns there: {', '.join(df.columns) or 'none'}")
    return fmt.parse(df, source, options)
