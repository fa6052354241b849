"""Preference methods as a table: what the dpo stage needs to know about each one.

Each entry of METHODS names its TRL config and trainer, the config arguments it takes from the `dpo` params section
beyond those every method shares (max_length, beta, the `trainer` section), how the scored pairs become the rows
its trainer reads, the eval figures it reports (name in metrics/dpo.json: the key TRL's `evaluate()` returns) and
which of them metrics/eval.json carries under the method's name. Adding a method is one entry here and a test in
tests/test_dpo.py.

The figures differ with the trainer: DPO, CPO (SimPO) and ORPO score each pair and log how often the chosen reply
out-rewards the rejected one and by how much.

Nothing heavy is imported at module level: TRL, torch, peft and datasets load when a trainer is built, so a stage's
`--help` stays instant.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("ladder.dpo")


def paired(dataset):
    """Rows as load_pairs makes them (prompt, chosen, rejected): TRL's conversational preference format."""
    return dataset


@dataclass(frozen=True)
class Method:
    config: str                                  # "module:Class" of the TRL config
    trainer: str                                 # "module:Class" of the TRL trainer
    options: Callable[[dict], dict[str, Any]]    # `dpo` params -> the config arguments only this method takes
    rows: Callable[[Any], Any]                   # paired Dataset -> the Dataset its trainer reads
    figures: dict[str, str]                      # name in metrics/dpo.json -> TRL's eval key
    headline: tuple[str, ...]                    # figures metrics/eval.json carries, under the method's name


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
}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"dpo.method must be one of {', '.join(METHODS)}, not {name!r}")
    return METHODS[name]


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def config_for(params: dict, hw: dict):
    """The TRL config of `params['method']`: the `trainer` section passed through (ladder.training), then
    max_length, beta and the method's own arguments."""
    from ladder.training import trainer_arguments

    entry = method(params["method"])
    args = trainer_arguments(params["trainer"], "checkpoints/dpo", params["seed"], hw) | {
        "max_length": params["max_length"], "beta": params["beta"]}
    return _load(entry.config)(**args, **entry.options(params))


def trainer_for(params: dict, model, tokenizer, data: dict, hw: dict, peft_config, callbacks=()):
    """The TRL trainer of `params['method']` training `peft_config`'s adapter on `model`, on `data`'s paired
    train and eval rows turned into the rows that method reads."""
    from ladder.training import compact_fused_head

    entry = method(params["method"])
    if not hw["cuda"]:
        log.info("fused LM head on labelled positions only: %s", compact_fused_head())
    return _load(entry.trainer)(model=model, args=config_for(params, hw), train_dataset=entry.rows(data["train"]),
                                eval_dataset=entry.rows(data["eval"]), processing_class=tokenizer,
                                peft_config=peft_config, callbacks=list(callbacks))


def eval_figures(name: str, metrics: dict) -> dict:
    """The eval figures method `name` declares, from what its trainer's evaluate() returned."""
    return {figure: round(float(metrics[key]), 6) for figure, key in method(name).figures.items() if key in metrics}


def sft_model(base: str | Path, sft: str | Path, hw: dict):
    """Base with the SFT adapter merged in: the starting point, and the reference, of preference tuning."""
    from peft import PeftModel

    from ladder.training import load_causal_lm

    return PeftModel.from_pretrained(load_causal_lm(base, hw), sft).merge_and_unload()
