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
The judge's share of the preference pairs (`classifier.preference_share`, ladder/data/holdout.py) is held out of
DPO's train split, and so is a self pair made from one of the judge's source rows: the judge and DPO never
learn from the same row. Eval pairs stay, as the filters leave them.

Usage:
    python -m stages.score
"""
from __future__ import annotations

import logging
import time

import polars as pl

from ladder import paths
from ladder.data.holdout import judge_holdout
from ladder.data.records import SCHEMAS, removed_by, removed_by_metadata, require_columns, require_rows
from ladder.data.reward_filter import histograms, keep_mask, self_pairs, summary
from ladder.stage import stage

log = logging.getLogger("ladder.score")


@stage("score")
def main(all_params: dict) -> None:
    from ladder.io import atomic_path, read_parquet, write_json, write_parquet
    from ladder.training.reward_model import Scorer

    params, chat_template = all_params["reward"], all_params["sft"]["chat_template"]
    share = all_params["classifier"]["preference_share"]
    conversations = read_parquet(paths.CONVERSATIONS)
    pairs = read_parquet(paths.PREFERENCES)
    require_columns(conversations, SCHEMAS["conversations"], paths.CONVERSATIONS)
    require_columns(pairs, SCHEMAS["preferences"], paths.PREFERENCES)
    # pairs may be none: SFT needs none, and the dpo stage says so when it has too few
    require_rows(conversations, paths.CONVERSATIONS, "score", {"train": 1, "eval": 1})
    scorer = Scorer(paths.REWARD, params["max_length"], params["score_batch_size"])
    start = time.perf_counter()
    conversations = conversations.with_columns(pl.Series("score", scorer.score_conversations(
        conversations["messages"].to_list()), dtype=pl.Float64))
    n_texts, seconds = conversations.height, time.perf_counter() - start
    extra = self_pairs(conversations, scorer, params["self_pairs"], paths.BASE, chat_template) \
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
    # what each filter removed, after clean's: the stages that read these tables name them when too few rows are left
    by_filter = " ".join(f"{k}: {v}" for k, v in params["filter"].items())
    write_parquet(conversations.filter(keep_conv), paths.SCORED_SFT, metadata=removed_by_metadata({
        **removed_by(paths.CONVERSATIONS), f"reward.filter = {by_filter}": int((~keep_conv).sum())}))
    write_parquet(pairs.filter(keep_pairs), paths.SCORED_DPO, metadata=removed_by_metadata({
        **removed_by(paths.PREFERENCES), f"classifier.preference_share = {share}": int(held_out.sum()),
        f"reward.min_margin = {params['min_margin']}": int((~keep_pairs).sum())}))
    with atomic_path(paths.PLOTS / "score") as tmp:
        tmp.mkdir()
        for name, frame in {**histograms(conversations, "score", "sft"), **histograms(pairs, "score", "dpo")}.items():
            frame.write_csv(tmp / f"{name}.csv")
    write_json({"filter": params["filter"], "min_margin": params["min_margin"],
                "sft": summary(conversations, keep_conv), "dpo": summary(pairs, keep_pairs),
                "self_pairs": extra.height, "preference_share": share, "dpo_held_out_for_judge": int(held_out.sum()),
                "dpo_train_chosen_above_rejected": round(float((pairs.filter(pl.col("split") == "train")["score"] > 0)
                                                               .mean() or 0.0), 6)}, paths.metrics_file("score"))
    write_json({"scored_texts": n_texts, "texts_per_second": round(n_texts / seconds, 1)}, paths.timings_file("score"))
    log.info("scored %d texts in %.1f s", n_texts, seconds)


if __name__ == "__main__":
    main()
