"""DPO on the GPU, built as the dpo stage builds it (ladder.training.trainer's model loader and trainer arguments, TRL's
DPOTrainer with a fresh LoRA adapter whose disabled pass is the reference): a bf16 base computing in bf16, the
optimizer the arguments pick on CUDA, only the adapter moving, and finite DPO metrics that show it learned."""
from __future__ import annotations

import math

import pytest
import torch

from ladder.training.trainer import hardware, load_causal_lm, trainer_arguments

pytestmark = pytest.mark.gpu
# Chosen replies answer the question, rejected ones dodge it: a preference 6 steps of LoRA can pick up.
PAIRS = [([{"role": "system", "content": "You are Aria, a librarian."},
           {"role": "user", "content": f"Tell me about book {i}."}],
          f"Book {i} is about dragons and maps.", "I would rather not say.") for i in range(8)]
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
# What the stage passes to TRL (params `dpo`, trainer part), shortened; a constant high rate so that 6 steps
# over 8 pairs move the adapter measurably.
TRAINER = {"max_steps": 6, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
           "learning_rate": 5e-3, "lr_scheduler_type": "constant", "logging_steps": 1,
           "activation_checkpointing": False}
DPO_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
               "logps/chosen", "logps/rejected")


def watch():
    """A callback that keeps the adapter's weights as training starts and the dtype of the first decoder layer's
    output in every training pass (built here: transformers is imported inside the tests)."""
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        def __init__(self):
            self.start: dict[str, torch.Tensor] = {}
            self.dtypes: set = set()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
            layer = next(m for n, m in model.named_modules() if n.endswith("layers.0"))
            layer.register_forward_hook(
                lambda module, inputs, out: self.dtypes.add((out[0] if isinstance(out, tuple) else out).dtype)
                if module.training else None)

    return Watch()


def test_dpo_trains_a_lora_adapter_over_a_bf16_base_on_the_gpu(tiny_llama, tmp_path, monkeypatch):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from ladder.training.chat import fit_prompt

    monkeypatch.chdir(tmp_path)
    hw = hardware()
    assert hw["cuda"] and hw["bf16"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    data = Dataset.from_list([{"prompt": fit_prompt(p, tokenizer, 64), "chosen": [{"role": "assistant", "content": c}],
                               "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS])
    args = trainer_arguments(TRAINER, str(tmp_path / "dpo"), 0, hw) | {"max_length": 96, "beta": 0.1}
    watched = watch()
    trainer = DPOTrainer(model=load_causal_lm(tiny_llama, hw), args=DPOConfig(**args, loss_type=["sigmoid"]),
                         train_dataset=data, eval_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"],
                                                lora_dropout=LORA["dropout"], target_modules=LORA["target_modules"]),
                         callbacks=[watched])
    result = trainer.train()
    assert result.global_step == TRAINER["max_steps"]

    # What the hardware chose: bf16, and the plain torch AdamW (the dpo stage names no GPU optimizer; the
    # Chai recipe's DPO used adamw_torch) with fp32 state on the GPU for the fp32 adapter.
    assert trainer.args.bf16 and trainer.args.optim == "adamw_torch"
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # under accelerate's wrapper
    assert type(optimizer) is torch.optim.AdamW
    states = [optimizer.state[p] for group in optimizer.param_groups for p in group["params"]]
    assert states and all(s["exp_avg"].dtype == torch.float32 and s["exp_avg"].is_cuda for s in states)
    assert watched.dtypes == {torch.bfloat16}  # what the layers computed in while training

    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).state_dict()
    lora = 0
    for name, param in trainer.model.named_parameters():
        assert param.is_cuda, name
        if "lora_" in name:  # PEFT keeps the adapter in fp32 over the bf16 base
            assert param.requires_grad and param.dtype == torch.float32, name
            assert not torch.equal(param.detach(), watched.start[name]), f"{name} did not move"
            lora += 1
        else:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert not param.requires_grad and param.dtype == torch.bfloat16, name
            assert torch.equal(param.detach().cpu(), fresh[plain]), name
    layers = trainer.model.config.num_hidden_layers
    assert lora == layers * len(LORA["target_modules"]) * 2  # an A and a B per targeted projection

    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert len(logged) == TRAINER["max_steps"]
    assert all(math.isfinite(entry[key]) for entry in logged for key in DPO_METRICS)
    # The first step's policy is the reference (LoRA's B starts at zero): no margin yet, loss log 2.
    assert logged[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    figures = trainer.evaluate()
    assert all(math.isfinite(figures[f"eval_{key}"]) for key in DPO_METRICS)
    # Learned, not just finite: on the pairs it trained on, chosen now beats rejected against the reference.
    assert figures["eval_rewards/margins"] > 0 and figures["eval_rewards/accuracies"] > 0.5
    assert figures["eval_loss"] < math.log(2)
