"""reward: train a reward model on thumbs-up feedback, and measure it on the eval split.

Reads   data/clean/feedback.parquet, models/reward_base (the reward model's own backbone, not the judge's),
        params `reward` (objective, max_length, lora, seed, score_batch_size, cpu_bf16, launcher,
        accelerate_config, trainer: passed through to transformers.TrainingArguments).
Writes  models/reward (a plain sequence-classification model + reward_objective.json), metrics/reward.json,
        dvclive/reward/ (training curves), metrics/timings/reward.json.

The text is the whole conversation, rendered as the backbone expects (ladder.training.reward_model.render) and
truncated on the LEFT so the latest turns survive. `objective: regression` is the Chai author's MSE on
thumbs-up 0/1; `classification` is cross-entropy over two classes. `lora: null` fine-tunes every weight.

Usage:
    python -m stages.reward
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ladder import paths
from ladder.evaluation.metrics import binary_metrics
from ladder.training.reward_model import build_model, train
from ladder.stage import stage
from ladder.training.trainer import stage_hardware, trainer_check

log = logging.getLogger("ladder.reward")


def load_feedback(path: str | Path) -> dict[str, dict[str, list]]:
    import polars as pl

    from ladder.io import read_parquet
    from ladder.data.records import require_columns, require_rows

    df = read_parquet(path)
    require_columns(df, ("messages", "label", "split"), path)
    require_rows(df, path, "reward", {"train": 1, "eval": 1})
    return {split: {"messages": df.filter(pl.col("split") == split)["messages"].to_list(),
                    "label": df.filter(pl.col("split") == split)["label"].to_list()} for split in ("train", "eval")}


@stage("reward", hardware=stage_hardware, trainer=trainer_check("transformers:TrainingArguments"),
       inputs=lambda params: load_feedback(paths.FEEDBACK))
def main(all_params: dict, hw: dict) -> None:
    from transformers import AutoTokenizer

    from ladder.io import atomic_path, write_json
    from ladder.training.reward_model import OBJECTIVE_FILE, left_truncating, render, score_texts
    from ladder.training.trainer import is_main_process, split_timings

    params = all_params["reward"]
    data = load_feedback(paths.FEEDBACK)
    tokenizer = left_truncating(AutoTokenizer.from_pretrained(paths.REWARD_BASE))
    texts = {s: [render(m, tokenizer) for m in data[s]["messages"]] for s in data}
    start = time.perf_counter()
    model = build_model(paths.REWARD_BASE, params["objective"], params["lora"], params["seed"],
                        tokenizer.pad_token_id)
    model, figures = train(model, tokenizer, texts["train"], data["train"]["label"], params, hw)
    train_seconds = time.perf_counter() - start
    if not is_main_process():
        return
    model.eval()
    start = time.perf_counter()
    scores = score_texts(model, tokenizer, texts["eval"], params["objective"], params["max_length"],
                         params["score_batch_size"])
    eval_seconds = max(time.perf_counter() - start, 1e-9)
    majority = int(sum(y >= 0.5 for y in data["train"]["label"]) * 2 >= len(data["train"]["label"]))
    stable, timings = split_timings(figures)
    metrics = {"objective": params["objective"], "train_rows": len(texts["train"]),
               "eval": {k: v if v is None else round(v, 6)
                        for k, v in binary_metrics(scores, data["eval"]["label"], majority).items()},
               "train_loss": round(stable["train_loss"], 6)}
    with atomic_path(paths.REWARD) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / OBJECTIVE_FILE).write_text(json.dumps({"objective": params["objective"]}) + "\n")
    write_json(metrics, paths.metrics_file("reward"))
    write_json({"processes": stable["processes"], "train_seconds": round(train_seconds, 2), "eval_rows_per_second": round(len(scores) / eval_seconds, 1),
                **stable["tokens"], **{k: round(v, 3) for k, v in timings.items()}}, paths.timings_file("reward"))
    log.info("eval: %s", metrics["eval"])


if __name__ == "__main__":
    main()
