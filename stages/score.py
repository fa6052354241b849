"""score: score every conversation and preference pair with the reward model, and filter the training data.

Reads   data/clean/{conversations,preferences}.parquet, models/reward, models/base (only with
        self_pairs), params `reward` (filter, min_margin, self_pairs, max_length, score_batch_size),
        `sft.chat_template` (self_pairs render prompts as SFT will) and `classifier.preference_share`.
Writes  data/scored/sft.parquet (conversations + `score`), data/scored/dpo.parquet (pairs + `score_chosen`,
        `score_rejected`, `score` = their margin), metrics/score.json, plots/score/*.csv (score
        histograms per table, source and split), metrics/timings/score.json.

A conversation is scored whole (its assistant turns included), a pair as prompt + chosen and prompt +
rejected. Filters touch the train split only, so eval sets stay comparable across variants:
`filter: {keep_top: 0.9}` keeps the best-scored 90% of train conversations, `{min_score: 0.4}` those
scoring at least 0.4; pairs are kept when score_chosen - score_rejected >= `min_margin`.
`self_pairs` (the Chai author's unbuilt idea): for some train prompts, sample replies from models/base
and add a pair whose chosen is the human reply and rejected the lowest-scored sample.
The judge's share of the preference pairs (`classifier.preference_share`, ladder/holdout.py) is held out of
DPO's train split, and so is a self pair made from one of the judge's source rows: the judge and DPO never
learn from the same row. Eval pairs stay, as the filters leave them.

Usage:
    python -m stages.score
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import polars as pl

from ladder.holdout import judge_share_mask
from ladder.records import stable_id, unit_interval
from ladder.stage import stage

log = logging.getLogger("ladder.score")
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


def judge_holdout(pairs: pl.DataFrame, extra: pl.DataFrame, share: float) -> pl.Series:
    """True for the train pairs DPO must not see: the judge's share of the preference table (`pairs`) and the
    pairs of `extra` (self pairs, source "self:<source>") made from one of those source rows."""
    mask = judge_share_mask(pairs, share)
    judged = pairs.filter(mask)
    keys = set(zip(judged["source"], judged["row"]))
    held = mask.to_list() + [
        (source.removeprefix("self:"), row) in keys for source, row in zip(extra["source"], extra["row"])]
    splits = pairs["split"].to_list() + extra["split"].to_list()
    return pl.Series("held_out", [h and s == "train" for h, s in zip(held, splits)], dtype=pl.Boolean)


def with_prompt(messages: list[dict]) -> tuple[list[dict], str] | None:
    """(prompt, reply): the conversation up to its last assistant turn, and that turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=0)
    return (messages[:last], messages[last]["content"]) if last > 0 else None


def self_pairs(conversations: pl.DataFrame, scorer, params: dict, base: str | Path,
               chat_template: str = "base") -> pl.DataFrame:
    """Preference pairs from the base model's own worst replies to train prompts, rendered with the chat
    template SFT will train with."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladder.chat import use_template
    from ladder.generation import sample_replies
    from ladder.training import hardware, progress

    train = conversations.filter(pl.col("split") == "train")
    order = sorted(range(train.height), key=lambda i: unit_interval(params["seed"], "self_pairs", train["id"][i]))
    picked = []
    for i in order:
        row = train.row(i, named=True)
        if len(picked) < params["prompts"] and (cut := with_prompt(row["messages"])) is not None:
            picked.append((row, cut))
    tokenizer = use_template(AutoTokenizer.from_pretrained(base), chat_template)
    hw = hardware()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if hw["bf16"] else torch.float32)
    model = model.to("cuda" if hw["cuda"] else "cpu").eval()
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


@stage("score")
def main(all_params: dict) -> None:
    from ladder.io import atomic_path, write_json, write_parquet
    from ladder.reward_model import Scorer

    params, chat_template = all_params["reward"], all_params["sft"]["chat_template"]
    share = all_params["classifier"]["preference_share"]
    scorer = Scorer("models/reward", params["max_length"], params["score_batch_size"])
    conversations = pl.read_parquet("data/clean/conversations.parquet")
    pairs = pl.read_parquet("data/clean/preferences.parquet")
    start = time.perf_counter()
    conversations = conversations.with_columns(pl.Series("score", scorer.score_conversations(
        conversations["messages"].to_list()), dtype=pl.Float64))
    n_texts, seconds = conversations.height, time.perf_counter() - start
    extra = self_pairs(conversations, scorer, params["self_pairs"], "models/base", chat_template) \
        if params["self_pairs"]["enabled"] else pairs.clear()
    held_out = judge_holdout(pairs, extra, share)
    pairs = pl.concat([pairs, extra]).filter(~held_out)  # before scoring: held-out pairs are never used here
    start = time.perf_counter()
    prompts = pairs["prompt"].to_list()
    for side in ("chosen", "rejected"):
        texts = [p + [{"role": "assistant", "content": r}] for p, r in zip(prompts, pairs[side].to_list())]
        pairs = pairs.with_columns(pl.Series(f"score_{side}", scorer.score_conversations(texts), dtype=pl.Float64))
    n_texts, seconds = n_texts + 2 * pairs.height, seconds + time.perf_counter() - start
    pairs = pairs.with_columns((pl.col("score_chosen") - pl.col("score_rejected")).alias("score"))
    keep_conv = keep_mask(conversations["score"], conversations["split"], conversations["id"], params["filter"])
    keep_pairs = (pairs["split"] == "eval") | (pairs["score"] >= params["min_margin"])
    write_parquet(conversations.filter(keep_conv), "data/scored/sft.parquet")
    write_parquet(pairs.filter(keep_pairs), "data/scored/dpo.parquet")
    with atomic_path("plots/score") as tmp:
        tmp.mkdir()
        for name, frame in {**histograms(conversations, "score", "sft"), **histograms(pairs, "score", "dpo")}.items():
            frame.write_csv(tmp / f"{name}.csv")
    write_json({"filter": params["filter"], "min_margin": params["min_margin"],
                "sft": summary(conversations, keep_conv), "dpo": summary(pairs, keep_pairs),
                "self_pairs": extra.height, "preference_share": share, "dpo_held_out_for_judge": int(held_out.sum()),
                "dpo_train_chosen_above_rejected": round(float((pairs.filter(pl.col("split") == "train")["score"] > 0)
                                                               .mean() or 0.0), 6)}, "metrics/score.json")
    write_json({"scored_texts": n_texts, "texts_per_second": round(n_texts / seconds, 1)}, "metrics/timings/score.json")
    log.info("scored %d texts in %.1f s", n_texts, seconds)


if __name__ == "__main__":
    main()
