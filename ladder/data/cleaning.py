"""Cleaning: every raw source to the unified records (ladder/data/records.py), filtered, deduplicated, split and mixed;
the clean stage's docstring gives the order. Every source row ends in a table or in rejects with its reason.
"""
from __future__ import annotations

import re
import time
from collections import Counter

import polars as pl

from ladder import paths
from ladder.data.records import SCHEMAS, TABLES, unit_interval


def _norm(text: pl.Expr) -> pl.Expr:
    """Text for exact dedup: lower case, any run of blanks as one space (NFKC is left out: it costs
    more than the rest of the stage on 200k conversations)."""
    return (text.str.to_lowercase().str.replace_many(["\n", "\t"], [" ", " "])
            .str.replace_all(" {2,}", " ").str.strip_chars())


def message_keys(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """Per record of a messages column, in order: `_turns` (not counting system), `_shortest`,
    `_longest`, `_total` (characters), `_key` (the normalised conversation) and `_prompt` (the
    normalised part before its last assistant message: what a model is asked to continue)."""
    lines = (df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_r"),
                       pl.int_ranges(0, pl.col(column).list.len()).alias("_p"), column)
             .explode([column, "_p"])
             .select("_r", "_p", pl.col(column).struct.field("role"),
                     pl.col(column).struct.field("content").str.len_chars().alias("_len"),
                     (pl.col(column).struct.field("role") + ": " + _norm(pl.col(column).struct.field("content")))
                     .alias("_line")))
    before_reply = pl.col("_p") < pl.col("_p").filter(pl.col("role") == "assistant").max().fill_null(0)
    keys = lines.group_by("_r", maintain_order=True).agg(
        (pl.col("role") != "system").sum().alias("_turns"), pl.col("_len").min().alias("_shortest"),
        pl.col("_len").max().alias("_longest"), pl.col("_len").sum().alias("_total"),
        pl.col("_line").str.join("\n").alias("_key"),
        (pl.col("_line").str.len_chars().filter(before_reply).sum().cast(pl.Int64)
         + before_reply.sum().cast(pl.Int64) - 1).alias("_cut"))
    return keys.select(pl.exclude("_r", "_cut"), pl.col("_key").str.slice(0, pl.col("_cut").clip(0)).alias("_prompt"))


def with_keys(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """The table with the helper columns its filters, dedup and split need (dropped before writing)."""
    if table == "arena":
        prompt = _norm(pl.col("prompt"))
        return df.with_columns(prompt.alias("_prompt"), (prompt + "\x1e" + _norm(pl.col("response_a")) + "\x1e"
                                                         + _norm(pl.col("response_b"))).alias("_key"))
    if table != "preferences":
        return pl.concat([df, message_keys(df, "messages")], how="horizontal")
    keys = message_keys(df, "prompt").with_columns(pl.col("_key").alias("_prompt"))  # the whole prompt
    return pl.concat([df, keys], how="horizontal").with_columns(
        (pl.col("_key") + "\x1e" + _norm(pl.col("chosen")) + "\x1e" + _norm(pl.col("rejected"))).alias("_key"))


def filter_reasons(table: str, p: dict) -> pl.Expr:
    """The reason a record is dropped by the `clean` filters, or null to keep it. Each reason names its param
    (removed_by reads it back)."""
    none = pl.lit(None, dtype=pl.String)
    if table == "arena":
        langs = [lang.lower() for lang in p["arena_languages"]]
        return pl.when(pl.lit(bool(langs)) & ~pl.col("language").str.to_lowercase().is_in(langs).fill_null(False)
                       ).then(pl.lit("language not in clean.arena_languages")).otherwise(none)
    if table == "preferences":
        replies = pl.max_horizontal(pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars())
        return (pl.when(replies > p["max_message_chars"]).then(pl.lit("reply longer than clean.max_message_chars"))
                .when(pl.col("_total") > p["max_conversation_chars"])
                .then(pl.lit("prompt longer than clean.max_conversation_chars")).otherwise(none))
    reason = (pl.when(pl.col("_turns") < p["min_turns"]).then(pl.lit(f"fewer than {p['min_turns']} messages (clean.min_turns)"))
              .when(pl.col("_shortest") < p["min_message_chars"]).then(pl.lit("message shorter than clean.min_message_chars"))
              .when(pl.col("_longest") > p["max_message_chars"]).then(pl.lit("message longer than clean.max_message_chars"))
              .when(pl.col("_total") < p["min_conversation_chars"]).then(pl.lit("conversation shorter than clean.min_conversation_chars"))
              .when(pl.col("_total") > p["max_conversation_chars"]).then(pl.lit("conversation longer than clean.max_conversation_chars")))
    if table == "conversations" and p["sft_requires_thumbs_up"]:
        reason = reason.when(pl.col("thumbs_up") == False).then(pl.lit("thumbs down (clean.sft_requires_thumbs_up)"))  # noqa: E712
    return reason.otherwise(none)


def param_of(reason: str) -> str:
    """The param behind a filter's reason: "clean.min_turns", "clean.mix.chai"."""
    mix = re.fullmatch(r"not drawn by clean\.mix \((.*): .*\)", reason)
    return f"clean.mix.{mix.group(1)}" if mix else "clean." + re.search(r"\bclean\.(\w+)", reason).group(1)


def removed_by(dropped: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per table, the records each param's filter removed, in the order the filters ran."""
    return {t: dict(Counter(param_of(r) for r in dropped.filter(pl.col("table") == t)["reason"])) for t in TABLES}


def with_values(removed: dict[str, int], params: dict) -> dict[str, int]:
    """{"clean.min_turns": 308} as {"clean.min_turns = 4": 308}, each param's value read from `params` (all
    sections), for the messages of a stage left with too few rows."""
    def value(name: str):
        node = params
        for part in name.split(".", 2):  # clean.mix.<source>: a source name may hold a dot
            node = node[part]
        return str(node).lower() if isinstance(node, bool) else node

    return {f"{name} = {value(name)}": n for name, n in removed.items()}


def emptied(parsed: dict[str, pl.DataFrame], kept: dict[str, pl.DataFrame], dropped: pl.DataFrame,
            p: dict) -> list[str]:
    """A warning for each source whose records of a table the filters removed every one of (a param that empties a
    source is rarely meant), naming the params that did it."""
    warnings = []
    for t in TABLES:
        before = Counter(parsed[t]["source"].to_list())
        after = Counter(kept[t]["source"].to_list())
        for source, n in before.items():
            if n and not after[source]:
                mine = dropped.filter((pl.col("table") == t) & (pl.col("source") == source))["reason"]
                by = with_values(dict(Counter(param_of(r) for r in mine)), {"clean": p})
                warnings.append(f"clean removed every {t} record of source {source!r} ({n}): "
                                + ", ".join(f"{k} ({v})" for k, v in by.items()))
    return warnings


def drop(tables: dict, table: str, reason: pl.Expr, log_of_drops: list) -> None:
    df = tables[table].with_columns(reason.alias("_reason"))
    log_of_drops.append(df.filter(pl.col("_reason").is_not_null()).select(
        pl.lit(table).alias("table"), "source", "row", pl.col("_reason").alias("reason")))
    tables[table] = df.filter(pl.col("_reason").is_null()).drop("_reason")


def assign_split(tables: dict, fraction: float, seed: int) -> pl.DataFrame:
    """(source, row, split): eval when the row's stable hash falls under `fraction`, then widened until
    no prompt of an eval record is also the prompt of a train record."""
    keys = pl.concat([tables[t].select("source", "row", pl.col("_prompt").alias("prompt")) for t in TABLES])
    rows = keys.select("source", "row").unique(maintain_order=True)
    keys = keys.filter(pl.col("prompt") != "")  # a greeting alone is nobody's prompt: it ties no rows together
    rows = rows.with_columns(pl.Series("eval", [unit_interval(seed, "split", s, r) < fraction
                                                for s, r in rows.iter_rows()], dtype=pl.Boolean))
    while True:
        flagged = keys.join(rows, on=["source", "row"])
        eval_prompts = flagged.filter("eval").select("prompt").unique()
        grow = flagged.join(eval_prompts, on="prompt", how="semi").filter(~pl.col("eval")).select("source", "row").unique()
        if grow.is_empty():
            break
        rows = (rows.join(grow.with_columns(pl.lit(True).alias("grow")), on=["source", "row"], how="left")
                .with_columns(pl.col("eval") | pl.col("grow").fill_null(False)).drop("grow"))
    return rows.select("source", "row", pl.when("eval").then(pl.lit("eval")).otherwise(pl.lit("train")).alias("split"))


def mix_reason(splits: pl.DataFrame, mix: dict, seed: int) -> pl.DataFrame:
    """(source, row, reason) for the train rows that the per-source `mix` weight leaves out. A float is
    the fraction to keep, an int the number of rows; a source absent from `mix` is kept whole. Eval rows
    are never sampled, so changing the mix leaves the eval set as it was."""
    out = []
    for source, weight in mix.items():
        train = splits.filter((pl.col("source") == source) & (pl.col("split") == "train")).select("source", "row")
        draw = train.with_columns(pl.Series("u", [unit_interval(seed, "mix", source, r) for r in train["row"]],
                                            dtype=pl.Float64))
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"clean.mix.{source}: {weight!r} is not a fraction (float) or a row count (int)")
        keep = (draw.filter(pl.col("u") < weight) if isinstance(weight, float)
                else draw.sort("u", "row").head(weight))
        out.append(draw.join(keep, on=["source", "row"], how="anti").select(
            "source", "row", pl.lit(f"not drawn by clean.mix ({source}: {weight})").alias("reason")))
    return pl.concat(out) if out else pl.DataFrame(schema={"source": pl.String, "row": pl.String, "reason": pl.String})


def reason_kind(reason: str) -> str:
    """A reason with its particulars (names, numbers, ids) blanked, for counting in metrics."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\b[0-9a-f]{16}\b|(?<![\w-])\d+", "…", reason)  # UTF-8 stays UTF-8


def clean(raw: dict[str, tuple[str, pl.DataFrame]], p: dict) -> tuple[dict[str, pl.DataFrame], dict, dict]:
    """raw: source -> (format, raw frame). Returns the five tables, metrics and timings."""
    from ladder.data.formats import parse_source, raw_json

    parsed, timings, extra = {}, {}, Counter()
    for source, (fmt, df) in raw.items():
        start = time.perf_counter()
        parsed[source] = parse_source(df, source, fmt, p, file=str(paths.RAW / f"{source}.parquet"))
        timings[source] = {"rows": df.height, "seconds": round(time.perf_counter() - start, 3)}
        extra.update({f"{source}: {k}": v for k, v in parsed[source].dropped.items()})
    tables = {t: pl.concat([parsed[s].tables[t] for s in raw] or [pl.DataFrame(schema=SCHEMAS[t])]) for t in TABLES}
    made = {t: tables[t].select("source") for t in TABLES}
    drops: list[pl.DataFrame] = []
    for t in TABLES:
        tables[t] = with_keys(t, tables[t])
        drop(tables, t, filter_reasons(t, p), drops)
        if p["dedup"]:
            first = ~pl.col("_key").is_first_distinct()
            drop(tables, t, pl.when(first).then(pl.lit("duplicate of ") + pl.col("id").first().over("_key")
                                                + pl.lit(" (clean.dedup)")), drops)
    splits = assign_split(tables, p["eval_fraction"], p["seed"])
    mixed_out = mix_reason(splits, p["mix"], p["seed"])
    for t in TABLES:
        tables[t] = tables[t].join(splits, on=["source", "row"], how="left", maintain_order="left")
        tables[t] = tables[t].join(mixed_out, on=["source", "row"], how="left", maintain_order="left")
        drop(tables, t, pl.col("reason"), drops)
        tables[t] = tables[t].drop("reason", "_turns", "_shortest", "_longest", "_total", "_key", "_prompt",
                                   strict=False)
    dropped = pl.concat(drops)

    rejects = [r for s in raw for r in parsed[s].rejects]
    used = pl.concat([tables[t].select("source", "row") for t in TABLES]).unique()
    for source, (fmt, df) in raw.items():
        lost = dropped.filter(pl.col("source") == source).join(used, on=["source", "row"], how="anti") \
            .unique(["row"], keep="first", maintain_order=True)
        if lost.height:
            index = _row_index(df, fmt)
            rejects += [{"source": source, "row": row, "reason": reason, "raw": raw_json(df.row(index[row], named=True))}
                        for row, reason in lost.select("row", "reason").iter_rows()]
    rejects_df = pl.DataFrame(rejects, schema=SCHEMAS["rejects"], orient="row") if rejects else pl.DataFrame(schema=SCHEMAS["rejects"])
    tables["rejects"] = rejects_df
    metrics = {**clean_metrics(raw, tables, extra), "removed_by": removed_by(dropped),
               "warnings": emptied(made, tables, dropped, p)}
    return tables, metrics, timings


def _row_index(df: pl.DataFrame, fmt: str) -> dict[str, int]:
    """Row key -> index of the first source row with it, as the parsers key rows (an id they refuse keys no row)."""
    from ladder.data.formats import FORMATS, id_problem
    column = FORMATS[fmt].id_column
    keys = df[column].to_list() if column else range(df.height)
    return {str(k): i for i, k in reversed(list(enumerate(keys))) if not column or not id_problem(k, column)}


def clean_metrics(raw: dict, tables: dict, extra: Counter) -> dict:
    """Rows, uses and reject reasons per source, records per table and split; clean() adds `removed_by` (records
    each param's filter removed, per table) and `warnings`."""
    used = pl.concat([tables[t].select("source", "row") for t in TABLES]).unique()
    rejects = tables["rejects"]
    sources = {}
    for source, (fmt, df) in raw.items():
        mine = rejects.filter(pl.col("source") == source)
        n_used = used.filter(pl.col("source") == source).height
        if n_used + mine.height != df.height:  # every row used or rejected, never both, never neither
            raise RuntimeError(f"source {source!r}: {df.height} rows but {n_used} used + {mine.height} rejected")
        sources[source] = {"format": fmt, "rows": df.height, "used": n_used, "rejected": mine.height,
                           "reject_reasons": dict(sorted(Counter(reason_kind(r) for r in mine["reason"]).items()))}
    counts = {t: {s: tables[t].filter(pl.col("split") == s).height for s in ("train", "eval")} for t in TABLES}
    return {"sources": sources, "records": counts, "not_made": dict(sorted(extra.items())),
            "rejected_rows": rejects.height}
