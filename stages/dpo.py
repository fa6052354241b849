"""dpo: preference tuning from the SFT model, by the method `dpo.method` names in ladder/training/preference.py's table: TRL's
DPOTrainer (any DPO loss type), SimPO and ORPO through TRL's CPO / ORPO trainers, KTO through KTOTrainer.

Reads   data/scored/dpo.parquet, models/base, models/sft, params `dpo` (method, loss_type, beta, max_prompt_length,
        max_length, eval_pairs, seed, simpo_gamma, kto, lora, cpu_bf16, launcher, accelerate_config, trainer:
        passed through to the TRL config).
Writes  models/dpo (a new LoRA adapter over base + SFT merged, the tokenizer and chat template),
        metrics/dpo.json (the method, pair counts, steps, train loss and the eval figures the method declares: reward
        accuracy and margin for dpo, simpo and orpo; desirable and undesirable rewards, their margin and the KL
        estimate for kto), dvclive/dpo/, metrics/timings/dpo.json.

The SFT adapter is merged into the base in memory (bf16 on a GPU, fp32 on CPU) and a new LoRA adapter is
trained over it; the reference model is that SFT model (the same weights with the new adapter switched
off), never the bare base. Prompts are rendered with the SFT chat template, so DPO sees what SFT saw, and
are shortened from the front (whole turns, the system message kept) to `max_prompt_length` tokens.
`method: dpo` takes TRL's DPO `loss_type` (sigmoid, ipo, hinge, ...); `simpo` and `orpo` need no reference;
`kto` trains on the same pairs unpaired: each chosen reply a desirable example, each rejected one an undesirable one.

Usage:
    python -m stages.dpo
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ladder import paths
from ladder.stage import stage
from ladder.training.trainer import stage_hardware, trainer_check

log = logging.getLogger("ladder.dpo")


def read_pairs(path: str | Path):
    """The scored pairs, checked for their columns and for a train and an eval pair at least."""
    from ladder.io import read_parquet
    from ladder.data.records import require_columns, require_rows

    df = read_parquet(path)
    require_columns(df, ("prompt", "chosen", "rejected", "split"), path)
    require_rows(df, path, "dpo", {"train": 1, "eval": 1})
    return df


def load_pairs(path: str | Path, tokenizer, max_prompt_length: int) -> dict:
    """Train and eval pairs (in id order) in TRL's conversational preference format."""
    import polars as pl
    from datasets import Dataset

    from ladder.training.chat import fit_prompt

    df = read_pairs(path).sort("id")
    out = {}
    for split in ("train", "eval"):
        part = df.filter(pl.col("split") == split)
        out[split] = Dataset.from_list([
            {"prompt": fit_prompt(p, tokenizer, max_prompt_length), "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]}
            for p, c, r in zip(part["prompt"].to_list(), part["chosen"].to_list(), part["rejected"].to_list())])
    return out


def preference_config(params: dict):
    """The TRL config class of the method `dpo.method` names: what `dpo.trainer` passes through to."""
    from ladder.training.preference import config_class

    return config_class(params["method"])


@stage("dpo", hardware=stage_hardware, trainer=trainer_check(preference_config),
       inputs=lambda params: read_pairs(paths.SCORED_DPO))
def main(all_params: dict, hw: dict) -> None:
    from transformers import AutoTokenizer

    from ladder.io import atomic_path, write_json
    from ladder.training.merging import sft_merged
    from ladder.training.preference import eval_figures, logged_params, trainer_for
    from ladder.training.trainer import (LiveCallback, causal_lm_settings, count_tokens,
                                 gathered_state_dict, is_main_process, lora_config, save_adapter, split_timings,
                                 token_timings)

    params = all_params["dpo"]
    tokenizer = AutoTokenizer.from_pretrained(paths.SFT)  # carries the chat template SFT trained with
    data = load_pairs(paths.SCORED_DPO, tokenizer, params["max_prompt_length"])
    if params["eval_pairs"] is not None:
        data["eval"] = data["eval"].select(range(min(params["eval_pairs"], len(data["eval"]))))
    live = LiveCallback("dpo", params=logged_params(params))
    start = sft_merged(paths.BASE, paths.SFT, **causal_lm_settings(hw))  # the reference too: see the docstring
    trainer = trainer_for(params, start, tokenizer, data, hw, lora_config(params["lora"], "CAUSAL_LM"), [live])
    tokens = count_tokens(trainer)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    trained = token_timings(tokens, seconds, trainer.args.world_size)  # before evaluate() counts its batches too
    figures = {"method": params["method"], "train_pairs": len(data["train"]), "eval_pairs": len(data["eval"]),
               "steps": result.global_step, "train_loss": round(result.training_loss, 6),
               **eval_figures(params["method"], trainer.evaluate())}  # every process takes part in evaluation
    weights = gathered_state_dict(trainer)
    if not is_main_process():
        return
    with atomic_path(paths.DPO) as tmp:
        save_adapter(trainer.accelerator.unwrap_model(trainer.model), tmp, weights)
        tokenizer.save_pretrained(tmp)
    write_json(figures, paths.metrics_file("dpo"))
    _, timings = split_timings(live.timings)
    args = trainer.args
    pairs = result.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    write_json({"processes": args.world_size, "train_seconds": round(seconds, 2),
                "train_pairs_per_second": round(pairs / seconds, 3), **trained, **{k: round(v, 3) for k, v in timings.items()}},
               paths.timings_file("dpo"))
    log.info("eval: %s", figures)


if __name__ == "__main__":
    main()
