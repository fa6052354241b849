"""reward: train a reward model on thumbs-up feedback, and measure it on the eval split.

Reads   data/clean/feedback.parquet, models/reward_base (the reward model's own backbone, not the judge's),
        params `reward` (objective, max_length, lora, seed, trainer: passed through to
        transformers.TrainingArguments).
Writes  models/reward (a plain sequence-classification model + reward_objective.json), metrics/reward.json,
        dvclive/reward/ (training curves), metrics/timings/reward.json.

The text is the whole conversation, rendered as the backbone expects (ladder.reward_model.render) and
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

from ladder.stage import stage

log = logging.getLogger("ladder.reward")


def load_feedback(path: str | Path) -> dict[str, dict[str, list]]:
    import polars as pl

    df = pl.read_parquet(path)
    for column in ("messages", "label", "split"):
        if column not in df.columns:
            raise ValueError(f"{path}: column {column!r} is missing")
    return {split: {"messages": df.filter(pl.col("split") == split)["messages"].to_list(),
                    "label": df.filter(pl.col("split") == split)["label"].to_list()} for split in ("train", "eval")}


TRAINING_KEYS = ("objective", "max_length", "lora", "seed", "score_batch_size", "cpu_bf16", "trainer")  # as dvc.yaml declares


def build_model(base: str | Path, objective: str, lora: dict | None, seed: int, pad_token_id: int | None = None):
    import torch
    from transformers import AutoModelForSequenceClassification

    from ladder.reward_model import num_labels

    torch.manual_seed(seed)  # the new head's initial weights
    labels = num_labels(objective)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=labels, problem_type="regression" if labels == 1 else "single_label_classification")
    if model.config.pad_token_id is None:  # decoder backbones: batches need the pad id, and it is saved
        model.config.pad_token_id = pad_token_id
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=lora["r"], lora_alpha=lora["alpha"],
                                                 lora_dropout=lora["dropout"], target_modules=lora["target_modules"]))
    return model


def train(model, tokenizer, texts: list[str], labels: list[float], params: dict, hw: dict):
    """Fit on (text, label); returns the trained model (LoRA merged in) and the trainer's figures."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from ladder.training import LiveCallback, count_tokens, token_timings, trainer_arguments

    classification = params["objective"] == "classification"
    data = Dataset.from_dict({"text": texts, "label": [int(y) if classification else float(y) for y in labels]})
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=params["max_length"]),
                    batched=True, remove_columns=["text"])
    live = LiveCallback("reward", params={k: params.get(k) for k in TRAINING_KEYS})
    args = TrainingArguments(**trainer_arguments(params["trainer"], "checkpoints/reward", params["seed"], hw))
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[live])
    tokens = count_tokens(trainer)
    start = time.perf_counter()
    result = trainer.train()
    trained = token_timings(tokens, time.perf_counter() - start, args.world_size)
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, {"train_loss": result.training_loss, "processes": args.world_size, "tokens": trained, **live.timings}


def binary_metrics(scores: list[float], labels: list[float], majority: int) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = thumbs up, threshold 0.5), ROC AUC, MSE, and the
    accuracy of always answering the train split's majority class."""
    n = len(labels)
    if not n:
        return {"rows": 0}
    truth = [y >= 0.5 for y in labels]
    pred = [s >= 0.5 for s in scores]
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"rows": n, "accuracy": sum(p == t for p, t in zip(pred, truth)) / n, "precision": precision,
            "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "roc_auc": roc_auc(scores, truth), "mse": sum((s - y) ** 2 for s, y in zip(scores, labels)) / n,
            "majority_baseline": sum(t == bool(majority) for t in truth) / n, "positive_rate": sum(truth) / n}


def roc_auc(scores: list[float], truth: list[bool]) -> float | None:
    """The probability that a random positive outscores a random negative (ties count half)."""
    ranked = sorted(zip(scores, truth))
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(t for _, t in ranked[i:j]) * (i + j + 1) / 2  # mean 1-based rank of the tie group
        i = j
    positives = sum(truth)
    negatives = len(truth) - positives
    if not positives or not negatives:
        return None  # undefined with one class only
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@stage("reward", hardware=True)
def main(all_params: dict, hw: dict) -> None:
    from transformers import AutoTokenizer, TrainingArguments

    from ladder.io import atomic_path, write_json
    from ladder.reward_model import OBJECTIVE_FILE, left_truncating, render, score_texts
    from ladder.training import check_trainer_keys, is_main_process, split_timings

    params = all_params["reward"]
    check_trainer_keys(params["trainer"], TrainingArguments, "reward")
    data = load_feedback("data/clean/feedback.parquet")
    tokenizer = left_truncating(AutoTokenizer.from_pretrained("models/reward_base"))
    texts = {s: [render(m, tokenizer) for m in data[s]["messages"]] for s in data}
    start = time.perf_counter()
    model = build_model("models/reward_base", params["objective"], params["lora"], params["seed"],
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
    with atomic_path("models/reward") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / OBJECTIVE_FILE).write_text(json.dumps({"objective": params["objective"]}) + "\n")
    write_json(metrics, "metrics/reward.json")
    write_json({"processes": stable["processes"], "train_seconds": round(train_seconds, 2), "eval_rows_per_second": round(len(scores) / eval_seconds, 1),
                **stable["tokens"], **{k: round(v, 3) for k, v in timings.items()}}, "metrics/timings/reward.json")
    log.info("eval: %s", metrics["eval"])


if __name__ == "__main__":
    main()
