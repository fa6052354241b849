"""classifier: the arena judge (WSDM Cup recipe), a LoRA sequence classifier that predicts which of two
responses people preferred; measured on the eval split with and without swap test-time augmentation.

Reads   data/clean/arena.parquet, models/judge_base, params `classifier` (max_length, field_budget,
        head_dropout, ties, swap_augment, quantization, lora, seed, eval_batch_size, trainer: passed through
        to transformers.TrainingArguments).
Writes  models/judge (adapter + head + tokenizer + judge.json; ladder.judge.load_judge reads it),
        metrics/judge.json, plots/judge/{calibration,confusion}.json, dvclive/classifier/ (curves),
        metrics/timings/classifier.json (train time, pairs/s).

`ties: drop` trains and scores two labels (model_a, model_b); `ties: class` adds tie as a third.
`swap_augment` adds every train pair again with a and b swapped and the label flipped.
`quantization: int8 | nf4` loads the backbone through bitsandbytes (QLoRA), with the quantize stage's settings.

Usage:
    python -m stages.classifier
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import click

from ladder.elo import soft_outcome

log = logging.getLogger("ladder.classifier")
COLUMNS = ("id", "prompt", "response_a", "response_b", "winner", "language", "split")
SETTINGS = ("max_length", "field_budget", "head_dropout", "ties", "quantization", "lora")  # saved with the judge


def load_arena(path: str | Path, ties: str) -> dict[str, list[dict]]:
    """Train and eval rows in id order; ties dropped or kept as a third label."""
    import polars as pl

    if ties not in ("drop", "class"):
        raise ValueError(f"classifier.ties must be drop or class, not {ties!r}")
    df = pl.read_parquet(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} missing")
    if ties == "drop":
        df = df.filter(pl.col("winner") != "tie")
    df = df.with_columns(pl.col("language").fill_null("unknown")).sort("id")
    return {s: df.filter(pl.col("split") == s).to_dicts() for s in ("train", "eval")}


def training_pairs(rows: list[dict], labels: list[str], swap: bool) -> list[tuple[str, str, str, int]]:
    """(prompt, first, second, label) per row, and the swapped copy with the label flipped when `swap`."""
    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}
    pairs = [(r["prompt"], r["response_a"], r["response_b"], labels.index(r["winner"])) for r in rows]
    if swap:
        pairs += [(r["prompt"], r["response_b"], r["response_a"], labels.index(flip[r["winner"]])) for r in rows]
    return pairs


def train(model, tokenizer, pairs: list[tuple], params: dict, hw: dict):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from ladder.judge import encode, judge_text
    from ladder.training import LiveCallback, trainer_arguments

    texts = [judge_text(p, a, b, tokenizer, params.get("field_budget")) for p, a, b, _ in pairs]
    data = Dataset.from_dict({"input_ids": encode(texts, tokenizer, params["max_length"], model.decoder),
                              "labels": [label for *_, label in pairs]})
    live = LiveCallback("classifier", params={k: params[k] for k in (*SETTINGS, "swap_augment", "seed", "trainer")})
    args = TrainingArguments(**trainer_arguments(params["trainer"], "checkpoints/classifier", params["seed"], hw,
                                                 optim_gpu="adamw_8bit"))
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[live])
    result = trainer.train()
    return {"train_loss": result.training_loss, "processes": args.world_size, **live.timings}


def log_loss(probabilities: list[list[float]], truth: list[int]) -> float:
    return -sum(math.log(max(p[t], 1e-15)) for p, t in zip(probabilities, truth)) / len(truth)


def evaluate(scored: dict[str, dict], rows: list[dict], labels: list[str], majority: str) -> tuple[dict, dict]:
    """metrics/judge.json figures and the plot rows (calibration of P(a wins), confusion matrix)."""
    truth = [labels.index(r["winner"]) for r in rows]

    tta = [[s["p_a"], s["p_b"], s.get("p_tie")][:len(labels)] for s in (scored[r["id"]] for r in rows)]
    predicted = [max(range(len(labels)), key=p.__getitem__) for p in tta]
    one = [scored[r["id"]]["p_a_ab"] for r in rows]
    # the first reply's share in each order, a tie counting half (as the Elo ladder counts it)
    first = [(soft_outcome(s["p_a_ab"], s.get("p_tie_ab")), soft_outcome(s["p_a_ba"], s.get("p_tie_ba")))
             for s in (scored[r["id"]] for r in rows)]
    flips = [(ab >= 0.5) != (ba >= 0.5) for ab, ba in first]
    languages: dict[str, list[bool]] = {}
    for r, p, t in zip(rows, predicted, truth):
        languages.setdefault(r["language"], []).append(p == t)
    n = len(rows)
    metrics = {
        "eval_rows": n, "labels": labels,
        "accuracy_tta": sum(p == t for p, t in zip(predicted, truth)) / n,
        "log_loss_tta": log_loss(tta, truth),
        "majority_baseline": sum(t == labels.index(majority) for t in truth) / n,
        "position_flip_rate": sum(flips) / n,
        "first_position_preference": sum((ab + 1 - ba) / 2 for ab, ba in first) / n,
        "accuracy_by_language": {k: round(sum(v) / len(v), 6) for k, v in sorted(languages.items())}}
    if len(labels) == 2:  # one order only is defined as a two-way choice
        metrics["accuracy_one_order"] = sum((p >= 0.5) == (t == 0) for p, t in zip(one, truth)) / n
        metrics["log_loss_one_order"] = log_loss([[p, 1 - p] for p in one], truth)
    bins: dict[int, list] = {}
    for s, t in zip((scored[r["id"]] for r in rows), truth):
        bins.setdefault(min(int(s["p_a"] * 10), 9), []).append((s["p_a"], t == 0))
    calibration = [{"bin": b / 10 + 0.05, "predicted": sum(p for p, _ in v) / len(v),
                    "observed": sum(o for _, o in v) / len(v), "rows": len(v)} for b, v in sorted(bins.items())]
    confusion = [{"actual": labels[t], "predicted": labels[p]} for t, p in zip(truth, predicted)]
    return metrics, {"calibration": calibration, "confusion": confusion}


@click.command(help=__doc__)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
def main(params_file: str) -> None:
    from transformers import AutoTokenizer

    from ladder.io import atomic_path, rounded, write_json
    from ladder.judge import LABELS, build_judge, is_decoder, load_judge, prepare_tokenizer, save_judge
    from ladder.models import read_identity
    from ladder.training import begin, is_main_process, split_timings

    params, hw = begin("classifier", params_file)
    data = load_arena("data/clean/arena.parquet", params["ties"])
    labels = list(LABELS[:3 if params["ties"] == "class" else 2])
    start = time.perf_counter()
    try:
        model = build_judge("models/judge_base", len(labels), params["head_dropout"], params["quantization"],
                            params.get("lora"), params["seed"], hw["cuda"], hw["bf16"])
    except ValueError as error:  # a bad setting or a backbone bitsandbytes cannot take: one line, no traceback
        raise click.ClickException(str(error)) from None
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained("models/judge_base"), is_decoder(model.backbone.config))
    figures = train(model, tokenizer, training_pairs(data["train"], labels, params["swap_augment"]), params, hw)
    train_seconds = time.perf_counter() - start
    if not is_main_process():
        return
    # The backbone by what it is (id, revision), not by where it lies: load_judge checks the folder it is given.
    settings = {"backbone": read_identity("models/judge_base"), "labels": labels,
                **{k: params.get(k) for k in SETTINGS}}
    with atomic_path("models/judge") as tmp:
        save_judge(model, tokenizer, settings, tmp)
    judge = load_judge("models/judge", "models/judge_base", hw["cuda"], hw["bf16"])  # measure what was saved, as inference loads it
    start = time.perf_counter()
    scored = judge.score(data["eval"], batch_size=params["eval_batch_size"])
    pairs_per_second = len(scored) / max(time.perf_counter() - start, 1e-9)
    counts = {w: sum(r["winner"] == w for r in data["train"]) for w in labels}
    metrics, plots = evaluate(scored, data["eval"], labels, max(labels, key=lambda w: (counts[w], -labels.index(w))))
    stable, timings = split_timings(figures)
    write_json(rounded({**metrics, "train_rows": len(data["train"]), "train_loss": stable["train_loss"]}),
               "metrics/judge.json")
    for name, rows in plots.items():
        write_json(rounded(rows), f"plots/judge/{name}.json")
    write_json({"processes": stable["processes"], "train_seconds": round(train_seconds, 2), "eval_pairs_per_second": round(pairs_per_second, 1),
                **{k: round(v, 3) for k, v in timings.items()}}, "metrics/timings/classifier.json")
    log.info("eval: %s", {k: v for k, v in rounded(metrics).items() if k != "accuracy_by_language"})


if __name__ == "__main__":
    main()
