"""Supervised fine-tuning of the chat model with a LoRA adapter (TRL SFTTrainer): the conversations, tokenized with
loss on the assistant turns only (ladder.training.chat), the training itself, and resuming a stopped run from its last
checkpoint made from the same inputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from ladder import paths
from ladder.errors import InputError

log = logging.getLogger("ladder.sft")
CHECKPOINTS = paths.CHECKPOINTS / "sft"


def load_conversations(path: str | Path) -> dict[str, list[list[dict]]]:
    """Train and eval conversations, each in id order (a stable choice of the first N)."""
    import polars as pl

    from ladder.io import read_parquet
    from ladder.data.records import require_columns, require_rows

    df = read_parquet(path)
    require_columns(df, ("messages", "split"), path)
    require_rows(df, path, "sft", {"train": 1, "eval": 1})
    df = df.sort("id")
    return {s: df.filter(pl.col("split") == s)["messages"].to_list() for s in ("train", "eval")}


def tokenized(conversations: list[list[dict]], tokenizer, max_length: int, learn_greeting: bool = True):
    """A datasets.Dataset of input_ids and labels, and how many conversations had nothing to learn from."""
    from datasets import Dataset

    from ladder.training.chat import tokenize_for_training

    rows = [tokenize_for_training(m, tokenizer, max_length, learn_greeting) for m in conversations]
    kept = [r for r in rows if r is not None]
    return Dataset.from_list(kept), len(rows) - len(kept)


def fingerprint(inputs: dict, files: list[Path]) -> str:
    """What a checkpoint was made from: a checkpoint of anything else is not resumed."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resume_point(checkpoints: Path, mark: str) -> str | None:
    """The last complete checkpoint made from the same inputs, or None (stale checkpoints are removed).
    A checkpoint of a finished run is not resumed: the trainer would take one step more than asked."""
    stamp = checkpoints / "fingerprint"
    if stamp.is_file() and stamp.read_text() == mark:
        unfinished = []
        for path in checkpoints.glob("checkpoint-*"):
            if (path / "trainer_state.json").is_file():
                state = json.loads((path / "trainer_state.json").read_text())
                if state["global_step"] < state["max_steps"]:
                    unfinished.append((state["global_step"], str(path)))
        return max(unfinished)[1] if unfinished else None
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    stamp.write_text(mark)
    return None


def train(params: dict, data: dict, base: str | Path, hw: dict, checkpoints: Path = CHECKPOINTS, callbacks=()):
    """Fine-tune (params: the `sft` section); returns (trainer, figures, timings). The trainer's model is the PEFT
    model with the new adapter."""
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ladder.training.chat import checked_collator, use_template
    from ladder.training.trainer import (LiveCallback, compact_fused_head, count_tokens, load_causal_lm, logged_train_loss,
                                 lora_config, token_timings, trainer_arguments)

    tokenizer = use_template(AutoTokenizer.from_pretrained(base), params["chat_template"])
    if not hw["cuda"]:
        log.info("fused LM head on labelled positions only: %s", compact_fused_head())
    greeting = params["learn_greeting"]
    train_set, dropped_train = tokenized(data["train"], tokenizer, params["max_length"], greeting)
    eval_set, dropped_eval = tokenized(data["eval"], tokenizer, params["max_length"], greeting)
    if not len(train_set) or not len(eval_set):  # before checkpoints or curves are touched
        raise InputError(f"sft: {len(train_set)} train and {len(eval_set)} eval conversations keep an assistant "
                         f"token within sft.max_length = {params['max_length']} (of {len(data['train'])} and "
                         f"{len(data['eval'])}); it needs at least 1 of each")
    args = trainer_arguments(params["trainer"], str(checkpoints), params["seed"], hw, optim_gpu="paged_adamw_32bit")
    config = SFTConfig(**args, max_length=params["max_length"], packing=params["packing"])
    mark = fingerprint({"params": params, "train": train_set.to_dict()}, [Path(base) / "model.safetensors"])
    with config.main_process_first(desc="checkpoints"):  # the main process clears stale ones, alone
        resume = resume_point(checkpoints, mark)
    live = LiveCallback("sft", params={k: v for k, v in params.items() if k != "trainer"} | params["trainer"])
    # Packed (bfd) or padding-free batches are one row with position ids, which transformers turns into a
    # block-diagonal mask (sdpa and flash-attention alike); TRL builds that collator itself and refuses another.
    padding_free = config.padding_free or (config.packing and config.packing_strategy in ("bfd", "bfd_split"))
    collator = None if padding_free else checked_collator(
        DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id))
    trainer = SFTTrainer(model=load_causal_lm(base, hw), args=config, train_dataset=train_set, eval_dataset=eval_set,
                         processing_class=tokenizer, peft_config=lora_config(params["lora"], "CAUSAL_LM"),
                         data_collator=collator, callbacks=[live, *callbacks])
    base_loss = trainer.evaluate()["eval_loss"]  # LoRA starts as a no-op: this is the base model's loss
    if resume:
        log.info("resuming from %s", resume)
    tokens = count_tokens(trainer)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    figures = {"eval_loss_base": base_loss, "eval_loss": trainer.evaluate()["eval_loss"],
               "train_loss": logged_train_loss(trainer.state) if any("loss" in e for e in trainer.state.log_history)
               else result.training_loss, "steps": result.global_step,
               "train_conversations": len(train_set), "eval_conversations": len(eval_set),
               "dropped_no_assistant_token": dropped_train + dropped_eval}
    return trainer, figures, {"processes": config.world_size, "train_seconds": round(seconds, 2),
                              **token_timings(tokens, seconds, config.world_size),
                              **{k: round(v, 3) for k, v in live.timings.items()}}
