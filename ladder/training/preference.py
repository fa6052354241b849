"""Preference methods as a table: what the dpo stage needs to know about each one.

Each entry of METHODS names its TRL config and trainer, the config arguments it takes from the `dpo` params section
beyond those every method shares (max_length, beta, the `trainer` section), how the scored pairs become the rows
its trainer reads, the eval figures it reports (name in metrics/dpo.json: the key TRL's `evaluate()` returns) and
which of them metrics/eval.json carries under the method's name. Adding a method is one entry here and a test in
tests/test_dpo.py.

The figures differ because TRL's trainers log different things: DPO, CPO (SimPO) and ORPO score each pair and log
how often the chosen reply out-rewards the rejected one and by how much; KTO scores each reply on its own, so it has
no accuracy, and logs the mean implied reward of the desirable and the undesirable replies, their difference, and
its estimate of the KL divergence from the reference (trl/trainer/kto_trainer.py, `_compute_loss`).

Nothing heavy is imported at module level: TRL, torch, peft and datasets load when a trainer is built, so a stage's
`--help` stays instant.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ladder import paths
from ladder.errors import InputError

log = logging.getLogger("ladder.dpo")


def paired(dataset):
    """Rows as load_pairs makes them (prompt, chosen, rejected): TRL's conversational preference format."""
    return dataset


def unpair(rows: list[dict]) -> list[dict]:
    """Each pair's prompt + chosen reply as a desirable row (label True), its prompt + rejected reply as an
    undesirable one (label False), in TRL's unpaired conversational format.

    KTO estimates its KL term on each row's prompt with the reply of the row before it in the batch (TRL rotates
    replies by one within each batch, in dataset order; KTO samples in order). So desirable and undesirable rows
    alternate, which gives every even-sized batch as many of each and a margin to report, and the undesirable row
    after pair i's desirable one holds the rejected reply of pair i + max(2, n // 2): with three pairs or more no
    row's neighbour answers the same prompt, whose reply would make the KL estimate a reward instead."""
    shift = max(2, len(rows) // 2) % max(len(rows), 1)
    out = []
    for i, row in enumerate(rows):
        other = rows[(i + shift) % len(rows)]
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": other["prompt"], "completion": other["rejected"], "label": False})
    return out


def unpaired(dataset):
    """unpair() on a datasets.Dataset."""
    from datasets import Dataset

    return Dataset.from_list(unpair(dataset.to_list()))


@dataclass(frozen=True)
class Method:
    config: str                                  # "module:Class" of the TRL config
    trainer: str                                 # "module:Class" of the TRL trainer
    options: Callable[[dict], dict[str, Any]]    # `dpo` params -> the config arguments only this method takes
    rows: Callable[[Any], Any]                   # paired Dataset -> the Dataset its trainer reads
    figures: dict[str, str]                      # name in metrics/dpo.json -> TRL's eval key
    headline: tuple[str, ...]                    # figures metrics/eval.json carries, under the method's name
    section: str | None = None                   # its own sub-section of the `dpo` params, if it has one


PAIRED_FIGURES = {"eval_loss": "eval_loss", "reward_accuracy": "eval_rewards/accuracies",
                  "reward_margin": "eval_rewards/margins"}

METHODS: dict[str, Method] = {
    "dpo": Method("trl:DPOConfig", "trl:DPOTrainer", lambda p: {"loss_type": [p["loss_type"]]}, paired,
                  PAIRED_FIGURES, ("reward_accuracy", "reward_margin")),
    # SimPO is CPO with the simpo loss and no behaviour-cloning term
    "simpo": Method("trl.experimental.cpo:CPOConfig", "trl.experimental.cpo:CPOTrainer",
                    lambda p: {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": p["simpo_gamma"]},
                    paired, PAIRED_FIGURES, ("reward_accuracy", "reward_margin")),
    "orpo": Method("trl.experimental.orpo:ORPOConfig", "trl.experimental.orpo:ORPOTrainer", lambda p: {}, paired,
                   PAIRED_FIGURES, ("reward_accuracy", "reward_margin")),
    "kto": Method("trl:KTOConfig", "trl:KTOTrainer", lambda p: dict(p["kto"]), unpaired,
                  {"eval_loss": "eval_loss", "reward_chosen": "eval_rewards/chosen",
                   "reward_rejected": "eval_rewards/rejected", "reward_margin": "eval_rewards/margins",
                   "kl": "eval_kl"},
                  ("reward_margin", "kl"), section="kto"),
}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"dpo.method must be one of {', '.join(METHODS)}, not {name!r}")
    return METHODS[name]


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def config_class(name: str):
    """The TRL config class of method `name` (its fields are what the `trainer` params may hold)."""
    return _load(method(name).config)


def config_for(params: dict, hw: dict):
    """The TRL config of `params['method']`: the `trainer` section passed through (ladder.training.trainer), then
    max_length, beta and the method's own arguments."""
    from ladder.training.trainer import trainer_arguments

    entry = method(params["method"])
    args = trainer_arguments(params["trainer"], str(paths.CHECKPOINTS / "dpo"), params["seed"], hw) | {
        "max_length": params["max_length"], "beta": params["beta"]}
    return config_class(params["method"])(**args, **entry.options(params))


def trainer_for(params: dict, model, tokenizer, data: dict, hw: dict, peft_config, callbacks=()):
    """The TRL trainer of `params['method']` training `peft_config`'s adapter on `model`, on `data`'s paired
    train and eval rows turned into the rows that method reads."""
    from ladder.training.trainer import compact_fused_head

    entry = method(params["method"])
    if not hw["cuda"]:
        log.info("fused LM head on labelled positions only: %s", compact_fused_head())
    return _load(entry.trainer)(model=model, args=config_for(params, hw), train_dataset=entry.rows(data["train"]),
                                eval_dataset=entry.rows(data["eval"]), processing_class=tokenizer,
                                peft_config=peft_config, callbacks=list(callbacks))


def eval_figures(name: str, metrics: dict) -> dict:
    """The eval figures method `name` declares, from what its trainer's evaluate() returned."""
    return {figure: round(float(metrics[key]), 6) for figure, key in method(name).figures.items() if key in metrics}


def headline(figures: dict, path: str | Path = paths.metrics_file("dpo")) -> tuple[str, dict]:
    """(the method's name, the figures it declares for metrics/eval.json) from its metrics/dpo.json; a missing one
    stops the metrics stage with the file's name."""
    if "method" not in figures:
        raise InputError(f"{path}: no method")
    missing = [name for name in method(figures["method"]).headline if name not in figures]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)} (method {figures['method']})")
    return figures["method"], {name: figures[name] for name in method(figures["method"]).headline}


def logged_params(params: dict) -> dict:
    """The `dpo` params a run logs to dvclive: the trainer section flattened in, and other methods' own sections
    left out, so a run's params.yaml holds what it used."""
    others = {m.section for name, m in METHODS.items() if m.section and name != params["method"]}
    return {k: v for k, v in params.items() if k != "trainer" and k not in others} | params["trainer"]
