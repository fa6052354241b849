"""The training data filtered by reward score (the score stage): which rows a `reward.filter` rule keeps, preference
pairs made from the base model's own worst replies (self pairs), and the score histograms and summaries it reports.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from ladder.data.records import stable_id, unit_interval

BINS = 20


def keep_mask(scores: pl.Series, splits: pl.Series, ids: pl.Series, rule: dict) -> pl.Series:
    """True for the rows the filter keeps: every eval row, and the train rows `rule` admits."""
    if len(rule) != 1 or next(iter(rule)) not in ("keep_top", "min_score"):
        raise ValueError(f"reward.filter must be {{keep_top: fraction}} or {{min_score: value}}, not {rule!r}")
    (kind, value), = rule.items()
    frame = pl.DataFrame({"score": scores, "split": splits, "id": ids}).with_row_index("i")
    if kind == "min_score":
        return ((frame["split"] == "eval") | (frame["score"] >= value)).alias("keep")
    train = frame.filter(pl.col("split") == "train").sort(["score", "id"], descending=[True, False])
    kept = set(train.head(round(value * train.height))["i"].to_list())
    return pl.Series("keep", [s == "eval" or i in kept for i, s in zip(frame["i"], frame["split"])])


def with_prompt(messages: list[dict]) -> tuple[list[dict], str] | None:
    """(prompt, reply): the conversation up to its last assistant turn, and that turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=0)
    return (messages[:last], messages[last]["content"]) if last > 0 else None


def self_pairs(conversations: pl.DataFrame, scorer, params: dict, base: str | Path,
               chat_template: str = "base") -> pl.DataFrame:
    """Preference pairs from the base model's own worst replies to train prompts, rendered with the chat
    template SFT will train with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladder.training.chat import use_template
    from ladder.evaluation.generation import sample_replies
    from ladder.training.trainer import device_name, hardware, progress, torch_dtype

    train = conversations.filter(pl.col("split") == "train")
    order = sorted(range(train.height), key=lambda i: unit_interval(params["seed"], "self_pairs", train["id"][i]))
    picked = []
    for i in order:
        row = train.row(i, named=True)
        if len(picked) < params["prompts"] and (cut := with_prompt(row["messages"])) is not None:
            picked.append((row, cut))
    tokenizer = use_template(AutoTokenizer.from_pretrained(base), chat_template)
    hw = hardware()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype(hw["bf16"]))
    model = model.to(device_name(hw["cuda"])).eval()
    samples = sample_replies(model, tokenizer, [prompt for _, (prompt, _) in picked], params["samples"],
                             params, params["seed"], batch_size=params["batch_size"])
    rows = []
    # one bar over the prompts: a bar per prompt's few samples would scroll the log away
    for (row, (prompt, human)), replies in progress(list(zip(picked, samples)), "self pairs: scoring samples",
                                                    "prompt"):
        replies = [r for r in replies if r and r != human]
        if not replies:
            continue
        scores = scorer.score_conversations([prompt + [{"role": "assistant", "content": r}] for r in replies],
                                            progress=False)
        worst = min(range(len(replies)), key=lambda k: (scores[k], k))
        rows.append({"id": stable_id("self", row["source"], row["row"]), "source": f"self:{row['source']}",
                     "row": row["row"], "prompt": prompt, "chosen": human, "rejected": replies[worst],
                     "split": "train"})
    return pl.DataFrame(rows, schema=conversations.select("id", "source", "row").schema | {
        "prompt": conversations.schema["messages"], "chosen": pl.String, "rejected": pl.String, "split": pl.String})


def histograms(df: pl.DataFrame, column: str, table: str) -> dict[str, pl.DataFrame]:
    """Counts per bin of `column`, one frame per source and split, on bins shared by the whole table."""
    if df.is_empty():
        return {}
    low, high = df[column].min(), df[column].max()
    width = (high - low) / BINS or 1.0
    binned = df.with_columns(((pl.col(column) - low) / width).floor().clip(0, BINS - 1).cast(pl.Int32).alias("b"))
    out = {}
    for (source, split), group in binned.group_by("source", "split", maintain_order=True):
        counts = group.group_by("b").len()
        out[f"{table}_{source.replace(':', '-')}_{split}"] = pl.DataFrame({"b": range(BINS)}).join(
            counts, on="b", how="left").select(
            (low + (pl.col("b") + 0.5) * width).round(4).alias("score"), pl.col("len").fill_null(0).alias("count"))
    return out


def summary(df: pl.DataFrame, keep: pl.Series) -> dict:
    return {split: {"scored": int((df["split"] == split).sum()), "kept": int(((df["split"] == split) & keep).sum()),
                    "mean_score": round(float(df.filter(pl.col("split") == split)["score"].mean() or 0.0), 6)}
            for split in ("train", "eval")}
