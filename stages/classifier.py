"""classifier: the pairwise judge (WSDM Cup recipe), a LoRA sequence classifier that predicts which of two
responses people preferred; measured on the eval split with and without swap test-time augmentation.

Reads   data/clean/arena.parquet, data/clean/preferences.parquet (when preference_share > 0),
        models/judge_base, params `classifier` (preference_share, max_length, field_budget, head, head_dropout,
        ties, swap_augment, identical_pairs, identical_label, rejected_ties, quantization, lora, seed, cpu_bf16,
        eval_batch_size, launcher, accelerate_config, trainer: passed through to
        transformers.TrainingArguments).
Writes  models/judge (adapter + head + tokenizer + judge.json; ladder.judge.classifier.load_judge reads it),
        metrics/judge.json, plots/judge/{calibration,confusion}.json, dvclive/classifier/ (curves),
        metrics/timings/classifier.json (train time, pairs/s).

The judge learns from the arena table and from `preference_share` of the role-play preference pairs
(ladder/data/holdout.py: chosen and rejected in an order fixed by a hash, laid out as inference lays out the
generated replies); the score stage holds the same pairs out of DPO's training. 0 is the WSDM setting (arena
only). metrics/judge.json gives the eval figures overall and per table (`by_source`: arena, preferences).

`ties: drop` trains and scores two labels (model_a, model_b); `ties: class` adds tie as a third.
`swap_augment` adds every train pair again with a and b swapped and the label flipped; `identical_pairs` adds
a share of train replies against themselves, labelled once as a win for each side (`identical_label: each`)
or as a tie (`tie`), so equal replies come out even; `rejected_ties` makes a tie of two replies rejected in one
turn. `head: cls` reads the pooled position (the recipe's); `head: replies` scores each reply's own tokens with
one shared scorer (ladder/judge/classifier.py, RepliesHead).
`quantization: int8 | nf4` loads the backbone through bitsandbytes (QLoRA), with the quantize stage's settings.

Usage:
    python -m stages.classifier
"""
from __future__ import annotations

import logging
import time

from ladder import paths
from ladder.errors import InputError
from ladder.judge.classifier import SETTINGS, train
from ladder.judge.rows import load_rows, training_pairs
from ladder.evaluation.metrics import evaluate_judge
from ladder.data.records import require_counts
from ladder.stage import stage
from ladder.training.trainer import stage_hardware, trainer_check

log = logging.getLogger("ladder.classifier")


def judge_rows(params: dict) -> tuple[dict[str, list[dict]], int]:
    """The judge's train and eval rows (arena, and the preference pairs' share) and the preference ties dropped;
    too few rows stop the stage with one line."""
    try:
        data, ties_dropped = load_rows(paths.ARENA, paths.PREFERENCES, params["ties"], params["preference_share"],
                                       params["rejected_ties"])
    except ValueError as error:  # a column missing from the clean tables
        raise InputError(str(error)) from None
    require_counts({s: len(data[s]) for s in ("train", "eval")},
                   [paths.ARENA] + ([paths.PREFERENCES] if params["preference_share"] else []), "classifier",
                   {"train": 1, "eval": 1})
    return data, ties_dropped


@stage("classifier", hardware=stage_hardware, trainer=trainer_check("transformers:TrainingArguments"),
       inputs=lambda params: judge_rows(params["classifier"]))
def main(all_params: dict, hw: dict) -> None:
    from transformers import AutoTokenizer

    from ladder.io import atomic_path, rounded, write_json
    from ladder.judge.classifier import LABELS, build_judge, is_decoder, load_judge, prepare_tokenizer, save_judge
    from ladder.data.models import read_identity
    from ladder.training.trainer import is_main_process, split_timings

    params = all_params["classifier"]
    data, ties_dropped = judge_rows(params)
    labels = list(LABELS[:3 if params["ties"] == "class" else 2])
    start = time.perf_counter()
    try:
        pairs = training_pairs(data["train"], labels, params["swap_augment"], params["identical_pairs"],
                               params["identical_label"])
        model = build_judge(paths.JUDGE_BASE, len(labels), params["head_dropout"], params["quantization"],
                            params["lora"], params["seed"], hw["cuda"], hw["bf16"], params["head"])
    except ValueError as error:  # a backbone bitsandbytes cannot take: one line, no traceback
        raise InputError(str(error)) from None
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(paths.JUDGE_BASE), is_decoder(model.backbone.config))
    figures = train(model, tokenizer, pairs, params, hw)
    train_seconds = time.perf_counter() - start
    if not is_main_process():
        return
    # The backbone by what it is (id, revision), not by where it lies: load_judge checks the folder it is given.
    settings = {"backbone": read_identity(paths.JUDGE_BASE), "labels": labels,
                **{k: params[k] for k in SETTINGS}, "head": model.kind}
    with atomic_path(paths.JUDGE) as tmp:  # becomes models/judge with the stage's other outputs
        save_judge(model, tokenizer, settings, tmp)
        judge = load_judge(tmp, paths.JUDGE_BASE, hw["cuda"], hw["bf16"])  # measure what was saved, as inference loads it
    start = time.perf_counter()
    scored = judge.score(data["eval"], batch_size=params["eval_batch_size"])
    pairs_per_second = len(scored) / max(time.perf_counter() - start, 1e-9)
    counts = {w: sum(r["winner"] == w for r in data["train"]) for w in labels}
    metrics, plots = evaluate_judge(scored, data["eval"], labels, max(labels, key=lambda w: (counts[w], -labels.index(w))))
    stable, timings = split_timings(figures)
    train_by_source = {t: sum(r["table"] == t for r in data["train"]) for t in sorted({r["table"] for r in data["train"]})}
    write_json(rounded({**metrics, "train_rows": len(data["train"]), "train_rows_by_source": train_by_source,
                        "preference_ties_dropped": ties_dropped,
                        "train_rejected_ties": sum(r["table"] == "preferences" and r["winner"] == "tie" for r in data["train"]),
                        "train_loss": stable["train_loss"]}),
               paths.metrics_file("judge"))
    for name, rows in plots.items():
        write_json(rounded(rows), paths.PLOTS / "judge" / f"{name}.json")
    write_json({"processes": stable["processes"], "train_seconds": round(train_seconds, 2), "eval_pairs_per_second": round(pairs_per_second, 1),
                **stable["tokens"], **{k: round(v, 3) for k, v in timings.items()}}, paths.timings_file("classifier"))
    log.info("eval: %s", {k: v for k, v in rounded(metrics).items() if k != "accuracy_by_language"})


if __name__ == "__main__":
    main()
