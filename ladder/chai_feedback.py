"""chai_feedback (tiendung/chai) parsed with polars expressions, one pass over all messages.

Row layout: `_id`, `conversation` = [{name, text}, ...], `thumbs_up`. The first message is the bot's
greeting and names the bot; "Anonymous user" is the user; "<bot> (deleted)" is a reply the user swiped
away before the bot's next (kept) reply. Per row this yields a conversation (swipes removed), a
feedback label (thumbs_up) and, with `swipe_pairs`, one preference pair per swiped reply: the history
before it, chosen = the reply the user kept, rejected = the swiped one.
"""
from __future__ import annotations

from collections import Counter

import polars as pl

from ladder.formats import DELETED, USER, Parsed, raw_json
from ladder.records import SCHEMAS, stable_id

MESSAGE_LIST = pl.List(pl.Struct({"name": pl.String, "text": pl.String}))


def _conform(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[int, str]]:
    """Bring `_id`, `conversation`, `thumbs_up` to their expected types. Rows whose values cannot be
    (a column of mixed types arrives as Python objects) are returned as {row index: reason}."""
    bad: dict[int, str] = {}
    conv = df["conversation"]
    dtype = conv.dtype
    fields = {f.name for f in dtype.inner.fields} if isinstance(dtype, pl.List) and isinstance(
        dtype.inner, pl.Struct) else set()
    if {"name", "text"} <= fields:
        conv = conv.list.eval(pl.struct(pl.element().struct.field("name").cast(pl.String),
                                        pl.element().struct.field("text").cast(pl.String)))
    else:
        values = []
        for i, value in enumerate(conv.to_list()):
            ok = value is None or isinstance(value, list) and all(
                isinstance(m, dict) and all(isinstance(m.get(k), (str, type(None))) for k in ("name", "text"))
                for m in value)
            if not ok:
                bad[i] = "conversation is not a list of {name, text} messages"
            values.append([{"name": m.get("name"), "text": m.get("text")} for m in value] if ok and value else
                          ([] if ok and value is not None else None))
        conv = pl.Series("conversation", values, dtype=MESSAGE_LIST)
    thumbs = df["thumbs_up"]
    if thumbs.dtype not in (pl.Boolean, pl.Null):
        values = thumbs.to_list()
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, bool):
                bad.setdefault(i, f"thumbs_up is not a boolean ({value!r})")
        thumbs = pl.Series("thumbs_up", [v if isinstance(v, bool) else None for v in values])
    ids = [None if v is None else str(v) for v in df["_id"].to_list()]
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value is None:
            bad.setdefault(i, "_id is missing")
        elif value in seen:
            bad.setdefault(i, f"duplicate _id (row {i})")
            ids[i] = f"{value}@{i}"  # a reject's row key must not collide with the kept row's
        seen.add(value or "")
    out = pl.DataFrame({"row": pl.Series(ids, dtype=pl.String), "conversation": conv,
                        "thumbs_up": thumbs.cast(pl.Boolean)}).with_row_index("_i")
    return out, bad


def _row_problems(msgs: pl.DataFrame) -> pl.DataFrame:
    """One reason per row that cannot be parsed (null when the row is fine)."""
    kept = pl.col("role").is_in(["user", "assistant"])
    first_unknown = pl.col("name").filter(pl.col("role").is_null() & pl.col("name").is_not_null()).first()
    return msgs.group_by("_i").agg(
        pl.when(pl.col("name").first().is_null() | (pl.col("name").first() == USER)
                | pl.col("name").first().str.ends_with(DELETED))
        .then(pl.lit("conversation does not start with the bot's greeting"))
        .when(pl.col("name").is_null().any()).then(pl.lit("message without a speaker name"))
        .when(first_unknown.is_not_null()).then(pl.lit("unknown speaker '") + first_unknown + pl.lit("'"))
        .when((kept & pl.col("text").is_null()).any()).then(pl.lit("message without text"))
        .when((kept & (pl.col("text") == "")).any()).then(pl.lit("empty message"))
        .when(~(pl.col("role") == "assistant").any()).then(pl.lit("conversation has no assistant message"))
        .alias("reason"))


def parse_chai_feedback(df: pl.DataFrame, source: str, options: dict) -> Parsed:
    rows, bad = _conform(df)
    rows = rows.with_columns(
        pl.when(pl.col("conversation").is_null()).then(pl.lit("conversation is missing"))
        .when(pl.col("conversation").list.len() == 0).then(pl.lit("conversation is empty"))
        .alias("reason"))
    if bad:
        rows = rows.with_columns(pl.coalesce(pl.col("_i").replace_strict(bad, default=None, return_dtype=pl.String),
                                             pl.col("reason")).alias("reason"))
    msgs = (rows.filter(pl.col("reason").is_null()).select("_i", "conversation").explode("conversation")
            .with_columns(pl.int_range(pl.len()).over("_i").alias("pos"),
                          pl.col("conversation").struct.field("name").alias("name"),
                          pl.col("conversation").struct.field("text")
                          .str.replace_all("\r\n?", "\n").str.strip_chars().alias("text"))
            .drop("conversation"))
    bot = pl.col("name").first().over("_i")
    msgs = msgs.with_columns(
        pl.when(pl.col("name") == USER).then(pl.lit("user"))
        .when(pl.col("name") == bot).then(pl.lit("assistant"))
        .when(pl.col("name") == bot + DELETED).then(pl.lit("deleted"))
        .alias("role"))
    problems = _row_problems(msgs)
    rows = rows.join(problems, on="_i", how="left").with_columns(pl.coalesce("reason", "reason_right").alias("reason"))
    msgs = msgs.join(problems.filter(pl.col("reason").is_null()).select("_i"), on="_i", how="semi")

    # Consecutive turns of one speaker become one message (a real blank line between them).
    kept = (msgs.filter(pl.col("role") != "deleted")
            .with_columns(pl.col("role").shift(1).over("_i").alias("prev_role"))
            .with_columns((pl.col("role") != pl.col("prev_role")).fill_null(True).alias("starts"))
            .with_columns((pl.col("starts").cast(pl.Int32).cum_sum().over("_i") - 1).alias("turn")))
    merged = (kept.group_by("_i", "turn", maintain_order=True)
              .agg(pl.col("role").first(), pl.col("text").str.join("\n\n").alias("content"))
              .group_by("_i", maintain_order=True)
              .agg(pl.struct("role", "content").alias("messages")))
    good = rows.join(merged, on="_i", how="inner").sort("_i")
    row_ids = good["row"].to_list()
    conversations = good.select(
        pl.Series("id", [stable_id(source, r, "conversations", 0) for r in row_ids], dtype=pl.String),
        pl.lit(source).alias("source"), "row", "messages", "thumbs_up")
    labelled = good.filter(pl.col("thumbs_up").is_not_null())
    feedback = labelled.select(
        pl.Series("id", [stable_id(source, r, "feedback", 0) for r in labelled["row"].to_list()], dtype=pl.String),
        pl.lit(source).alias("source"), "row", "messages", pl.col("thumbs_up").cast(pl.Float64).alias("label"))
    dropped = Counter({"feedback: thumbs_up is missing": good.height - labelled.height})

    preferences = pl.DataFrame(schema=SCHEMAS["preferences"])
    if options.get("swipe_pairs", True):
        preferences, skipped = _swipe_pairs(msgs, kept, good, source)
        dropped.update(skipped)

    rejected = rows.filter(pl.col("reason").is_not_null()).select("_i", "row", "reason")
    rejects = [{"source": source, "row": row if row is not None else str(i), "reason": reason,
                "raw": raw_json(df.row(i, named=True))} for i, row, reason in rejected.iter_rows()]
    return Parsed({"conversations": conversations, "preferences": preferences, "feedback": feedback,
                   "arena": pl.DataFrame(schema=SCHEMAS["arena"])}, rejects, +dropped)


def _swipe_pairs(msgs: pl.DataFrame, kept: pl.DataFrame, good: pl.DataFrame, source: str):
    """Pair each swiped reply with the bot reply the user kept next; the prompt is the conversation
    up to that reply. A swipe with no kept bot reply right after a user turn makes no pair."""
    nxt = (msgs.with_columns(pl.when(pl.col("role") != "deleted").then(pl.col("pos")).backward_fill()
                             .over("_i").alias("next_pos"))
           .filter(pl.col("role") == "deleted")
           .join(kept.select("_i", pl.col("pos").alias("next_pos"), pl.col("role").alias("next_role"),
                             pl.col("text").alias("chosen"), "starts", "turn"),
                 on=["_i", "next_pos"], how="left"))
    valid = ((pl.col("next_role") == "assistant") & pl.col("starts") & (pl.col("turn") >= 1)
             & (pl.col("text") != "") & (pl.col("text") != pl.col("chosen")))
    skipped = Counter({"swipe pair: no kept bot reply after a user turn, or same text":
                       nxt.height - nxt.filter(valid).height})
    pairs = (nxt.filter(valid).join(good.select("_i", "row", "messages"), on="_i", how="inner")
             .sort("_i", "pos"))
    keys = pairs.select("row", "pos").rows()
    pairs = pairs.select(
        pl.Series("id", [stable_id(source, r, "preferences", p) for r, p in keys], dtype=pl.String),
        pl.lit(source).alias("source"), "row", pl.col("messages").list.head(pl.col("turn")).alias("prompt"),
        "chosen", pl.col("text").alias("rejected"))
    return pairs, skipped
