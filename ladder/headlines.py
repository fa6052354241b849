"""metrics/eval.json's `stages` block: the figures of earlier stages a reviewer wants beside the ladder, read
from their metrics files (the preference method's own figures under its name, as ladder/preference.py declares)."""
from __future__ import annotations

import json
from pathlib import Path

from ladder.errors import InputError
from ladder.preference import headline

HEADLINES = {  # metrics file -> {name in eval.json: path of keys in that file}
    "reward": {"eval_accuracy": ("eval", "accuracy"), "eval_roc_auc": ("eval", "roc_auc")},
    "sft": {"eval_loss_base": ("eval_loss_base",), "eval_loss": ("eval_loss",)},
    "dpo": None,  # the preference method's own figures, under its name (ladder/preference.py)
    "merge": {"max_abs_logit_difference": ("max_abs_logit_difference",)},
    "judge": {"accuracy_tta": ("accuracy_tta",), "majority_baseline": ("majority_baseline",),
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
