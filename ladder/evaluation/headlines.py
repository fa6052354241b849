"""The figures a person compares across experiments.

metrics/eval.json's `stages` block: the figures of earlier stages a reviewer wants beside the ladder, read from
their metrics files (the preference method's own figures under its name, as ladder/training/preference.py declares).
metrics/headlines.json (`summary`), with the clean stage's metrics/records.json the metrics dvc.yaml declares:
the verdict, each check's value, the ratings, the score counts and that `stages` block, a few dozen numbers under
fixed keys, so that `dvc metrics show` and `dvc exp show` fit a terminal. The clean stage declares its own counts
because it is often run alone, with no later stage to carry them. The detail stays in each stage's own file under
metrics/."""
from __future__ import annotations

import json
from pathlib import Path

from ladder.errors import InputError
from ladder.training.preference import headline

HEADLINES = {  # metrics file -> {name in eval.json: path of keys in that file}
    "reward": {"eval_accuracy": ("eval", "accuracy"), "eval_roc_auc": ("eval", "roc_auc")},
    "sft": {"eval_loss_base": ("eval_loss_base",), "eval_loss": ("eval_loss",)},
    "dpo": None,  # the preference method's own figures, under its name (ladder/training/preference.py)
    "merge": {"max_abs_logit_difference": ("max_abs_logit_difference",)},
    "judge": {"accuracy_tta": ("accuracy_tta",), "log_loss_tta": ("log_loss_tta",),
              "majority_baseline": ("majority_baseline",),
              "position_flip_rate": ("position_flip_rate",)},
}


def headlines(folder: Path) -> dict:
    """The figures of earlier stages a reviewer wants beside the ladder (a missing file or key stops the stage)."""
    out = {}
    for producer, figures in HEADLINES.items():
        data = json.loads((folder / f"{producer}.json").read_text())
        if figures is None:
            method, values = headline(data, folder / f"{producer}.json")
            out[method] = values
            continue
        for name, keys in figures.items():
            value = data
            for key in keys:
                if not isinstance(value, dict) or key not in value:
                    raise InputError(f"{folder / f'{producer}.json'}: no {'.'.join(keys)}")
                value = value[key]
            out.setdefault(producer, {})[name] = value
    quantize = json.loads((folder / "quantize.json").read_text())["formats"]
    out["quantize"] = {name: {"kl_mean": f["kl_mean"], "top1_agreement": f["top1_agreement"],
                              "size_ratio_16bit": f["size_ratio_16bit"]} for name, f in quantize.items()}
    return out


def summary(evaluation: dict, score: dict) -> dict:
    """metrics/headlines.json from metrics/{eval,score}.json: keys are names of checks, models, stages and formats,
    never free text (a reason or a warning stays in its stage's file)."""
    validity = evaluation["validity"]
    models = evaluation["models"]
    return {
        "valid": validity["valid"],
        "checks": {name: check["value"] for name, check in validity["checks"].items()},
        "elo": {model: figures["elo"] for model, figures in models.items()},
        "elo_length_controlled": {model: figures["elo_length_controlled"] for model, figures in models.items()},
        "score": {"sft_train_kept": score["sft"]["train"]["kept"], "dpo_train_kept": score["dpo"]["train"]["kept"],
                  "dpo_train_chosen_above_rejected": score["dpo_train_chosen_above_rejected"]},
        **evaluation["stages"],
    }
