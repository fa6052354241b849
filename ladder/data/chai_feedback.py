"""chai_feedback (tiendung/chai) parsed with polars expressions, one pass over all messages.

Row layout: `_id`, `conversation` = [{name, text}, ...], `thumbs_up`. The first message is the bot's
greeting and names the bot; "Anonymous user" is the user; "<bot> (deleted)" is a reply the user swiped
away before the bot's next (kept) reply. Per row this yields a conversation (swipes removed), a
feedback label (thumbs_up) and, with `swipe_pairs`, one preference pair per swiped reply: the history
before it, chosen = the reply the user kept, rejected = the swiped one.

This is the large source (70k rows real, 200k in benchmarks/clean_chai.py), so the work is done on the
exploded message table with vectorized expressions; Python touches only ids and rejected rows.
"""
from __future__ import annotations

from collections import Counter

import polars as pl

from ladder.data.formats import DELETED, INVALID_LINE, USER, Parsed, id_problem, raw_json
from ladder.data.records import INVALID_JSON, INVALID_REASON, SCHEMAS, stable_ids

MESSAGE_LIST = pl.List(pl.Struct({"name": pl.String, "text": pl.String}))
NO_REASON = pl.lit(None, dtype=pl.String)


def _id_column(ids: list[str]) -> pl.Series:
    # Typed, as a table with no records must still stack with other sources' (an empty list infers as Null).
    return pl.Series("id", ids, dtype=pl.String)


def _conform(df: pl.DataFrame) -> pl.DataFrame:
    """`_i`, `row`, `conversation`, `thumbs_up` in their expected types, and a `reason` for rows that
    cannot be parsed. A source column of mixed types arrives as Python objects and is checked per row."""
    conv, thumbs, reasons = df["conversation"], df["thumbs_up"], [None] * df.height
    if INVALID_JSON in df.columns:
        given = df[INVALID_REASON].to_list() if INVALID_REASON in df.columns else reasons
        reasons = [None if line is None else reason or INVALID_LINE
                   for line, reason in zip(df[INVALID_JSON].to_list(), given)]
    inner = conv.dtype.inner if isinstance(conv.dtype, pl.List) else None
    if isinstance(inner, pl.Struct) and {"name", "text"} <= {f.name for f in inner.fields}:
        conv = conv.list.eval(pl.struct(pl.element().struct.field("name").cast(pl.String),
                                        pl.element().struct.field("text").cast(pl.String)))
    else:
        values = []
        for i, value in enumerate(conv.to_list()):
            ok = value is None or isinstance(value, list) and all(
                isinstance(m, dict) and all(isinstance(m.get(k), (str, type(None))) for k in ("name", "text"))
                for m in value)
            reasons[i] = reasons[i] or (None if ok else "conversation is not a list of {name, text} messages")
            values.append([{"name": m.get("name"), "text": m.get("text")} for m in value] if ok and value else
                          ([] if ok and value is not None else None))
        conv = pl.Series("conversation", values, dtype=MESSAGE_LIST)
    if thumbs.dtype not in (pl.Boolean, pl.Null):
        values = thumbs.to_list()
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, bool):
                reasons[i] = reasons[i] or f"thumbs_up is not a boolean ({value!r})"
        thumbs = pl.Series("thumbs_up", [v if isinstance(v, bool) else None for v in values])
    ids = _ids(df["_id"], reasons)
    frame = pl.DataFrame({"row": ids, "conversation": conv, "thumbs_up": thumbs.cast(pl.Boolean),
                          "reason": pl.Series(reasons, dtype=pl.String)}).with_row_index("_i")
    duplicate = pl.col("row").is_not_null() & ~pl.col("row").is_first_distinct()
    return frame.with_columns(
        pl.coalesce("reason", pl.when(pl.col("row").is_null()).then(pl.lit("_id is missing"))
                    .when(duplicate).then(pl.format("duplicate _id (row {})", "_i"))
                    .when(pl.col("conversation").is_null()).then(pl.lit("conversation is missing"))
                    .when(pl.col("conversation").list.len() == 0).then(pl.lit("conversation is empty"))
                    .when(pl.col("conversation").list.first().struct.field("name").is_in([USER, None])
                          | pl.col("conversation").list.first().struct.field("name").str.ends_with(DELETED))
                    .then(pl.lit("conversation does not start with the bot's greeting"))),
        # A reject's row key must not collide with a kept row's: a duplicate or missing id gets its index.
        pl.when(duplicate).then(pl.format("{}@{}", "row", "_i")).otherwise(
            pl.coalesce("row", pl.format("@{}", "_i"))).alias("row"))


def _ids(ids: pl.Series, reasons: list) -> pl.Series:
    """`_id` as text, null where it is no id (`formats.id_problem`), whose reason goes into `reasons`. A text or
    integer column is cast as it is; any other type is looked at row by row."""
    if ids.dtype in (pl.String, pl.Null) or ids.dtype.is_integer():
        return ids.cast(pl.String)
    text = []
    for i, value in enumerate(ids.to_list()):
        problem = None if value is None else id_problem(value, "_id")
        reasons[i] = reasons[i] or problem
        text.append(None if value is None or problem else str(value))
    return pl.Series("_id", text, dtype=pl.String)


def _messages(rows: pl.DataFrame) -> pl.DataFrame:
    """One line per message, in order: _i, g (global index), name, text (LF, trimmed), role
    (user | assistant | deleted | null for an unknown speaker), issue (why the row cannot be used)."""
    msgs = (rows.filter(pl.col("reason").is_null())
            .select("_i", pl.col("conversation").list.first().struct.field("name").alias("bot"), "conversation")
            .explode("conversation")
            .select("_i", "bot", pl.col("conversation").struct.field("name"),
                    pl.col("conversation").struct.field("text")))
    if msgs["text"].str.contains("\r", literal=True).any():
        msgs = msgs.with_columns(pl.col("text").str.replace_all("\r\n", "\n", literal=True)
                                 .str.replace_all("\r", "\n", literal=True))
    name, text = pl.col("name"), pl.col("text").str.strip_chars()
    # Roles as small integer codes first (string literals per message cost more than the parse itself).
    swiped = (name.str.ends_with(DELETED) & name.str.starts_with(pl.col("bot"))
              & (name.str.len_bytes() == pl.col("bot").str.len_bytes() + len(DELETED.encode())))
    code = (pl.when(name == USER).then(pl.lit(0, pl.UInt8)).when(name == pl.col("bot")).then(pl.lit(1, pl.UInt8))
            .when(swiped).then(pl.lit(2, pl.UInt8)))
    role = pl.lit(pl.Series(["user", "assistant", "deleted"])).gather(code)
    msgs = msgs.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("g"), "_i", name, text, role.alias("role"))
    kept = pl.col("role").is_in(["user", "assistant"])
    return msgs.with_columns(
        pl.when(name.is_null()).then(pl.lit("message without a speaker name"))
        .when(pl.col("role").is_null()).then(pl.format("unknown speaker '{}'", "name"))
        .when(kept & pl.col("text").is_null()).then(pl.lit("message without text"))
        .when(kept & (pl.col("text") == "")).then(pl.lit("empty message")).otherwise(NO_REASON).alias("issue"))


def _turns(kept: pl.DataFrame) -> pl.DataFrame:
    """Consecutive messages of one speaker joined into one turn by a blank line (a real one: the Chai
    code wrote a literal "/n/n"). Adds `starts` (message opens its turn) and `turn` (global turn number)."""
    starts = ((pl.col("role") != pl.col("role").shift(1)) | (pl.col("_i") != pl.col("_i").shift(1))).fill_null(True)
    kept = kept.with_columns(starts.alias("starts")).with_columns(pl.col("starts").cum_sum().alias("turn"))
    shared = ~pl.col("starts") | ~pl.col("starts").shift(-1).fill_null(True)  # in a turn of 2+ messages
    merged = kept.filter(shared).group_by("turn").agg(pl.col("_i").first(), pl.col("role").first(),
                                                      pl.col("text").str.join("\n\n"))
    single = kept.filter(~shared).select("turn", "_i", "role", "text")
    return kept, pl.concat([single, merged.select(single.columns)]).sort("turn")


def parse_chai_feedback(df: pl.DataFrame, source: str, options: dict) -> Parsed:
    rows = _conform(df)
    msgs = _messages(rows)
    problems = msgs.filter(pl.col("issue").is_not_null()).group_by("_i").agg(pl.col("issue").first())
    rows = (rows.join(problems, on="_i", how="left", maintain_order="left")
            .with_columns(pl.coalesce("reason", "issue").alias("reason")).drop("issue"))
    msgs = msgs.join(problems, on="_i", how="anti", maintain_order="left")
    kept, turns = _turns(msgs.filter(pl.col("role") != "deleted"))
    per_row = turns.group_by("_i", maintain_order=True).agg(
        pl.struct("role", pl.col("text").alias("content")).alias("messages"), pl.col("turn").first().alias("first_turn"))
    good = rows.join(per_row, on="_i", how="inner").sort("_i")
    row_ids = good["row"].to_list()
    conversations = good.select(_id_column(stable_ids((source,), row_ids, ("conversations", 0))),
                                pl.lit(source).alias("source"), "row", "messages", "thumbs_up")
    labelled = good.filter(pl.col("thumbs_up").is_not_null())
    feedback = labelled.select(_id_column(stable_ids((source,), labelled["row"].to_list(), ("feedback", 0))),
                               pl.lit(source).alias("source"), "row", "messages",
                               pl.col("thumbs_up").cast(pl.Float64).alias("label"))
    dropped = Counter({"feedback: thumbs_up is missing": good.height - labelled.height})
    preferences = pl.DataFrame(schema=SCHEMAS["preferences"])
    if options["swipe_pairs"]:
        preferences, skipped = _swipe_pairs(msgs, kept, turns, good, source)
        dropped.update(skipped)

    rejected = rows.filter(pl.col("reason").is_not_null()).select("_i", "row", "reason")
    rejects = [{"source": source, "row": row, "reason": reason, "raw": raw_json(df.row(i, named=True))}
               for i, row, reason in rejected.iter_rows()]
    return Parsed({"conversations": conversations, "preferences": preferences, "feedback": feedback,
                   "arena": pl.DataFrame(schema=SCHEMAS["arena"])}, rejects, +dropped)


def _swipe_pairs(msgs: pl.DataFrame, kept: pl.DataFrame, turns: pl.DataFrame, good: pl.DataFrame, source: str):
    """Pair each swiped reply with the bot turn the user kept next (all of it, if the bot went on in
    several messages); the prompt is the conversation up to that turn. A swipe with no kept bot reply
    right after a user turn makes no pair."""
    swipes = (msgs.with_columns(pl.when(pl.col("role") != "deleted").then(pl.col("g")).backward_fill().alias("next"))
              .filter(pl.col("role") == "deleted"))
    swipes = (swipes.join(kept.select(pl.col("g").alias("next"), pl.col("_i").alias("next_i"),
                                      pl.col("role").alias("next_role"), "starts", "turn"), on="next", how="left")
              .join(turns.select("turn", pl.col("text").alias("chosen")), on="turn", how="left"))
    swipes = (swipes.join(good.select("_i", "row", "messages", "first_turn"), on="_i", how="inner")
              .join(msgs.group_by("_i").agg(pl.col("g").min().alias("first_g")), on="_i")
              .with_columns((pl.col("g") - pl.col("first_g")).alias("pos")))
    n_turns = pl.col("turn") - pl.col("first_turn")
    valid = ((pl.col("next_i") == pl.col("_i")) & (pl.col("next_role") == "assistant") & pl.col("starts")
             & (n_turns >= 1) & (pl.col("text") != "") & (pl.col("text") != pl.col("chosen"))).fill_null(False)
    skipped = Counter({"swipe pair: no kept bot reply after a user turn, or same text": swipes.height
                       - swipes.filter(valid).height})
    pairs = swipes.filter(valid).sort("g")
    ids = [f"{r}\x1fpreferences\x1f{pos}" for r, pos in pairs.select("row", "pos").iter_rows()]
    return pairs.select(_id_column(stable_ids((source,), ids)), pl.lit(source).alias("source"), "row",
                        pl.col("messages").list.head(n_turns).alias("prompt"), "chosen",
                        pl.col("text").alias("rejected")), skipped
