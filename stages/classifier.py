"""classifier: the pairwise judge (WSDM Cup recipe), a LoRA sequence classifier that predicts which of two
responses people preferred; measured on the eval split with and without swap test-time augmentation.

Reads   data/clean/arena.parquet, data/clean/preferences.parquet (when preference_share > 0),
        models/judge_base, params `classifier` (preference_share, max_length, field_budget, head, head_dropout,
        ties, swap_augment, identical_pairs, identical_label, rejected_ties, quantization, lora, seed, cpu_bf16,
        eval_batch_size, trainer: passed through to transformers.TrainingArguments).
Writes  models/judge (adapter + head + tokenizer + judge.json; ladder.judge.load_judge reads it),
        metrics/judge.json, plots/judge/{calibration,confusion}.json, dvclive/classifier/ (curves),
        metrics/timings/classifier.json (train time, pairs/s).

The judge learns from the arena table and from `preference_share` of the role-play preference pairs
(ladder/holdout.py: chosen and rejected in an order fixed by a hash, laid out as inference lays out the
generated replies); the score stage holds the same pairs out of DPO's training. 0 is the WSDM setting (arena
only). metrics/judge.json gives the eval figures overall and per table (`by_source`: arena, preferences).

`ties: drop` trains and scores two labels (model_a, model_b); `ties: class` adds tie as a third.
`swap_augment` adds every train pair again with a and b swapped and the label flipped; `identical_pairs` adds
a share of train replies against themselves, labelled once as a win for each side (`identical_label: each`)
or as a tie (`tie`), so equal replies come out even; `rejected_ties` makes a tie of two replies rejected in one
turn. `head: cls` reads the pooled position (the recipe's); `head: replies` scores each reply's own tokens with
one shared scorer (ladder/judge.py, RepliesHead).
`quantization: int8 | nf4` loads the backbone through bitsandbytes (QLoRA), with the quantize stage's settings.

Usage:
    python -m stages.classifier
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from ladder.errors import InputError
from ladder.stage import stage
from ladder.validity import order_figures

log = logging.getLogger("ladder.classifier")
COLUMNS = ("id", "prompt", "response_a", "response_b", "winner", "language", "split")
SETTINGS = ("max_length", "field_budget", "head", "head_dropout", "ties", "quantization", "lora")  # saved with the judge


def load_arena(path: str | Path, ties: str) -> dict[str, list[dict]]:
    """Train and eval rows in id order; ties dropped or kept as a third label."""
    import polars as pl

    if ties not in ("drop", "class"):
        raise ValueError(f"classifier.ties must be drop or class, not {ties!r}")
    if not Path(path).is_file():
        raise ValueError(f"{path}: file not found")
    df = pl.read_parquet(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} missing")
    if ties == "drop":
        df = df.filter(pl.col("winner") != "tie")
    df = df.with_columns(pl.col("language").fill_null("unknown"), pl.lit("arena").alias("table")).sort("id")
    return {s: df.filter(pl.col("split") == s).to_dicts() for s in ("train", "eval")}


def load_rows(arena: str | Path, preferences: str | Path, ties: str, share: float,
              rejected_ties: bool = False) -> tuple[dict[str, list[dict]], int]:
    """The arena rows and the judge's share of the preference pairs, per split in id order, and the number of
    preference ties dropped. With share 0 the preferences file is not read (the WSDM setting). With ties as a
    class and `rejected_ties`, two replies rejected in one turn are a tie row (ladder.holdout.judge_rows)."""
    import polars as pl

    from ladder.holdout import check_share, judge_rows

    data = load_arena(arena, ties)
    if check_share(share) == 0:
        return data, 0
    if not Path(preferences).is_file():
        raise ValueError(f"{preferences}: file not found (classifier.preference_share is {share})")
    try:
        pairs, dropped = judge_rows(pl.read_parquet(preferences), share, rejected_ties and ties == "class")
    except ValueError as error:
        raise ValueError(f"{preferences}: {error}") from None
    for split in data:
        data[split] = sorted(data[split] + [r for r in pairs if r["split"] == split], key=lambda r: r["id"])
    return data, dropped


IDENTICAL_LABELS = ("each", "tie")


def training_pairs(rows: list[dict], labels: list[str], swap: bool, identical: float = 0.0,
                   identical_label: str = "each") -> list[tuple[str, str, str, int]]:
    """(prompt, first, second, label) per row, and the swapped copy with the label flipped when `swap`.
    `identical`: the share of rows (a stable hash of the id) that also give a reply against itself, so the
    judge learns that two equal replies are even: swapping alone never shows it such a pair, and it then
    favoured one position on them. `identical_label`: `each` labels the pair once as a win for each side,
    `tie` once as a tie; a two-label judge has no tie, so there it is always `each`. (In trials, ties kept the
    judge even on equal replies but it flipped more near-equal pairs with the order: README, the judge.)"""
    from ladder.records import unit_interval

    if identical_label not in IDENTICAL_LABELS:
        raise ValueError(f"classifier.identical_label must be each or tie, not {identical_label!r}")

    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}
    pairs = [(r["prompt"], r["response_a"], r["response_b"], labels.index(r["winner"])) for r in rows]
    if swap:
        pairs += [(r["prompt"], r["response_b"], r["response_a"], labels.index(flip[r["winner"]])) for r in rows]
    for r in rows:
        if identical and unit_interval("identical", r["id"]) < identical:
            reply = r["response_a"] if unit_interval("identical-reply", r["id"]) < 0.5 else r["response_b"]
            even = [labels.index("tie")] if identical_label == "tie" and "tie" in labels else [0, 1]
            pairs += [(r["prompt"], reply, reply, label) for label in even]
    return pairs


def train(model, tokenizer, pairs: list[tuple], params: dict, hw: dict):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from ladder.judge import encode_segments, judge_fields, pad_batch
    from ladder.training import LiveCallback, count_tokens, token_timings, trainer_arguments

    fields = [judge_fields(p, a, b, tokenizer, params["field_budget"]) for p, a, b, _ in pairs]
    ids, segments = encode_segments(fields, tokenizer, params["max_length"], model.decoder)
    columns = {"input_ids": ids, "labels": [label for *_, label in pairs]}
    if model.kind == "replies":
        columns["segments"] = segments
    data = Dataset.from_dict(columns)
    live = LiveCallback("classifier", params={k: params.get(k) for k in (*SETTINGS, "preference_share", "swap_augment",
                                                                         "identical_pairs", "identical_label", "seed", "cpu_bf16",
                                                                         "trainer")})
    args = TrainingArguments(**trainer_arguments(params["trainer"], "checkpoints/classifier", params["seed"], hw,
                                                 optim_gpu="adamw_8bit"))
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=lambda rows: pad_batch(tokenizer, rows),
                      callbacks=[live])
    tokens = count_tokens(trainer)
    start = time.perf_counter()
    result = trainer.train()
    trained = token_timings(tokens, time.perf_counter() - start, args.world_size)
    return {"train_loss": result.training_loss, "processes": args.world_size, "tokens": trained, **live.timings}


def log_loss(probabilities: list[list[float]], truth: list[int]) -> float:
    return -sum(math.log(max(p[t], 1e-15)) for p, t in zip(probabilities, truth)) / len(truth)


def tta_probabilities(score: dict, labels: list[str]) -> list[float]:
    return [score["p_a"], score["p_b"], score.get("p_tie")][:len(labels)]


def predicted_label(score: dict, labels: list[str]) -> int:
    probabilities = tta_probabilities(score, labels)
    return max(range(len(labels)), key=probabilities.__getitem__)


def figures(scored: dict[str, dict], rows: list[dict], labels: list[str], majority: str) -> dict:
    """Accuracy, log loss and position figures of `rows` (with TTA and, for two labels, one order alone)."""
    truth = [labels.index(r["winner"]) for r in rows]
    tta = [tta_probabilities(scored[r["id"]], labels) for r in rows]
    predicted = [predicted_label(scored[r["id"]], labels) for r in rows]
    one = [scored[r["id"]]["p_a_ab"] for r in rows]
    orders = [((s["p_a_ab"], s.get("p_tie_ab")), (s["p_a_ba"], s.get("p_tie_ba"))) for s in (scored[r["id"]] for r in rows)]
    first_share, flip_rate = order_figures(*zip(*orders))
    n = len(rows)
    out = {"rows": n,
           "accuracy_tta": sum(p == t for p, t in zip(predicted, truth)) / n,
           "log_loss_tta": log_loss(tta, truth),
           "majority_baseline": sum(t == labels.index(majority) for t in truth) / n,
           "position_flip_rate": flip_rate,
           "first_position_preference": first_share}
    if len(labels) == 2:  # one order only is defined as a two-way choice
        out["accuracy_one_order"] = sum((p >= 0.5) == (t == 0) for p, t in zip(one, truth)) / n
        out["log_loss_one_order"] = log_loss([[p, 1 - p] for p in one], truth)
    return out


def evaluate(scored: dict[str, dict], rows: list[dict], labels: list[str], majority: str) -> tuple[dict, dict]:
    """metrics/judge.json figures, overall and per table (`by_source`: a row's `table`, arena when it has
    none), and the plot rows (calibration of P(a wins), confusion matrix)."""
    overall = figures(scored, rows, labels, majority)
    n = overall.pop("rows")
    tables: dict[str, list[dict]] = {}
    for r in rows:
        tables.setdefault(r.get("table", "arena"), []).append(r)
    truth = [labels.index(r["winner"]) for r in rows]
    predicted = [predicted_label(scored[r["id"]], labels) for r in rows]
    languages: dict[str, list[bool]] = {}
    for r, p, t in zip(rows, predicted, truth):
        if r.get("table", "arena") == "arena":  # the preferences table records no language
            languages.setdefault(r["language"], []).append(p == t)
    metrics = {"eval_rows": n, "labels": labels, **overall,
               "accuracy_by_language": {k: round(sum(v) / len(v), 6) for k, v in sorted(languages.items())},
               "by_source": {t: figures(scored, v, labels, majority) for t, v in sorted(tables.items())}}
    bins: dict[int, list] = {}
    for s, t in zip((scored[r["id"]] for r in rows), truth):
        bins.setdefault(min(int(s["p_a"] * 10), 9), []).append((s["p_a"], t == 0))
    calibration = [{"bin": b / 10 + 0.05, "predicted": sum(p for p, _ in v) / len(v),
                    "observed": sum(o for _, o in v) / len(v), "rows": len(v)} for b, v in sorted(bins.items())]
    confusion = [{"actual": labels[t], "predicted": labels[p]} for t, p in zip(truth, predicted)]
    return metrics, {"calibration": calibration, "confusion": confusion}


@stage("classifier", hardware=True)
def main(all_params: dict, hw: dict) -> None:
    from transformers import AutoTokenizer, TrainingArguments

    from ladder.io import atomic_path, rounded, write_json
    from ladder.judge import LABELS, build_judge, is_decoder, load_judge, prepare_tokenizer, save_judge
    from ladder.models import read_identity
    from ladder.training import check_trainer_keys, is_main_process, split_timings

    params = all_params["classifier"]
    check_trainer_keys(params["trainer"], TrainingArguments, "classifier")
    try:
        data, ties_dropped = load_rows("data/clean/arena.parquet", "data/clean/preferences.parquet", params["ties"],
                                       params["preference_share"], params["rejected_ties"])
    except ValueError as error:  # a column missing from the clean tables
        raise InputError(str(error)) from None
    labels = list(LABELS[:3 if params["ties"] == "class" else 2])
    start = time.perf_counter()
    try:
        pairs = training_pairs(data["train"], labels, params["swap_augment"], params["identical_pairs"],
                               params["identical_label"])
        model = build_judge("models/judge_base", len(labels), params["head_dropout"], params["quantization"],
                            params["lora"], params["seed"], hw["cuda"], hw["bf16"], params["head"])
    except ValueError as error:  # a backbone bitsandbytes cannot take: one line, no traceback
        raise InputError(str(error)) from None
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained("models/judge_base"), is_decoder(model.backbone.config))
    figures = train(model, tokenizer, pairs, params, hw)
    train_seconds = time.perf_counter() - start
    if not is_main_process():
        return
    # The backbone by what it is (id, revision), not by where it lies: load_judge checks the folder it is given.
    settings = {"backbone": read_identity("models/judge_base"), "labels": labels,
                **{k: params[k] for k in SETTINGS}, "head": model.kind}
    with atomic_path("models/judge") as tmp:
        save_judge(model, tokenizer, settings, tmp)
    judge = load_judge("models/judge", "models/judge_base", hw["cuda"], hw["bf16"])  # measure what was saved, as inference loads it
    start = time.perf_counter()
    scored = judge.score(data["eval"], batch_size=params["eval_batch_size"])
    pairs_per_second = len(scored) / max(time.perf_counter() - start, 1e-9)
    counts = {w: sum(r["winner"] == w for r in data["train"]) for w in labels}
    metrics, plots = evaluate(scored, data["eval"], labels, max(labels, key=lambda w: (counts[w], -labels.index(w))))
    stable, timings = split_timings(figures)
    train_by_source = {t: sum(r["table"] == t for r in data["train"]) for t in sorted({r["table"] for r in data["train"]})}
    write_json(rounded({**metrics, "train_rows": len(data["train"]), "train_rows_by_source": train_by_source,
                        "preference_ties_dropped": ties_dropped,
                        "train_rejected_ties": sum(r["table"] == "preferences" and r["winner"] == "tie" for r in data["train"]),
                        "train_loss": stable["train_loss"]}),
               "metrics/judge.json")
    for name, rows in plots.items():
        write_json(rounded(rows), f"plots/judge/{name}.json")
    write_json({"processes": stable["processes"], "train_seconds": round(train_seconds, 2), "eval_pairs_per_second": round(pairs_per_second, 1),
                **stable["tokens"], **{k: round(v, 3) for k, v in timings.items()}}, "metrics/timings/classifier.json")
    log.info("eval: %s", {k: v for k, v in rounded(metrics).items() if k != "accuracy_by_language"})


if __name__ == "__main__":
    main()
