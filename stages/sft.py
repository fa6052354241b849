"""sft: LoRA supervised fine-tuning of the base chat model on the scored conversations (TRL SFTTrainer).

Reads   data/scored/sft.parquet, models/base, params `sft` (chat_template, max_length, learn_greeting, packing,
        cpu_bf16, eval_conversations, seed, lora, launcher, accelerate_config, trainer: passed through to
        trl.SFTConfig).
Writes  models/sft (the LoRA adapter, the tokenizer and the exact chat template trained with),
        metrics/sft.json (eval loss of the base model and of the tuned one), dvclive/sft/ (curves),
        metrics/timings/sft.json (tokens/s). Resume checkpoints: checkpoints/sft (git- and dvc-ignored).

Loss is on assistant turns only, end-of-turn token included (ladder.training.chat). On CUDA the stage picks bf16,
flash-attention 2 (when flash-attn is installed) and paged_adamw_32bit; on CPU sdpa, fp32 (bf16 autocast
with `cpu_bf16`) and fused AdamW.
A run stopped part way resumes from its last complete checkpoint when started again with the same
inputs and params; checkpoints of other inputs are discarded.

Usage:
    python -m stages.sft
"""
from __future__ import annotations

import logging
import shutil

from ladder import paths
from ladder.stage import stage
from ladder.training.trainer import stage_hardware, trainer_check
from ladder.training.supervised import CHECKPOINTS, load_conversations, train

log = logging.getLogger("ladder.sft")


@stage("sft", hardware=stage_hardware, trainer=trainer_check("trl:SFTConfig"),
       inputs=lambda params: load_conversations(paths.SCORED_SFT))
def main(all_params: dict, hw: dict) -> None:
    from ladder.io import after_outputs, atomic_path, write_json
    from ladder.training.trainer import gathered_state_dict, is_main_process, save_adapter

    params = all_params["sft"]
    data = load_conversations(paths.SCORED_SFT)
    if params["eval_conversations"] is not None:
        data["eval"] = data["eval"][:params["eval_conversations"]]
    trainer, figures, timings = train(params, data, paths.BASE, hw)
    weights = gathered_state_dict(trainer)
    if not is_main_process():
        return
    with atomic_path(paths.SFT) as tmp:
        save_adapter(trainer.accelerator.unwrap_model(trainer.model), tmp, weights)
        trainer.processing_class.save_pretrained(tmp)
    # Checkpoints exist to resume a run that was stopped; this one finished (once its outputs are in place), so a
    # forced rerun starts afresh.
    after_outputs(lambda: shutil.rmtree(CHECKPOINTS, ignore_errors=True))
    write_json({k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()}, paths.metrics_file("sft"))
    write_json(timings, paths.timings_file("sft"))
    log.info("eval loss %.4f (base %.4f)", figures["eval_loss"], figures["eval_loss_base"])


if __name__ == "__main__":
    main()
