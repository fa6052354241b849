"""LoRA SFT on the GPU: bf16 base, paged_adamw_32bit, only the adapter moves, and a stopped run resumes to the
same adapter as an uninterrupted one."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from ladder.training.trainer import StopAfter, hardware

pytestmark = pytest.mark.gpu
CONVERSATIONS = [
    [{"role": "system", "content": "You are Aria, a librarian."}, {"role": "assistant", "content": "Welcome!"},
     {"role": "user", "content": f"Tell me about book {i}."},
     {"role": "assistant", "content": f"Book {i} is about dragons and maps."}]
    for i in range(12)]
DATA = {"train": CONVERSATIONS[:8], "eval": CONVERSATIONS[8:]}
# A resumed run on the GPU matches the uninterrupted one to float rounding, not bit for bit: cuBLAS may pick
# other kernels for the first steps of a fresh process.
RESUME_ATOL, RESUME_RTOL = 1e-5, 1e-4


def params(**trainer):
    return {"chat_template": "base", "max_length": 64, "packing": False, "learn_greeting": True, "seed": 0,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "trainer": {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 5e-3,
                        "lr_scheduler_type": "constant", "activation_checkpointing": False} | trainer}


class ActivationDtypes(TrainerCallback):
    """Records the dtype of the first decoder layer's output in every training forward pass."""

    def __init__(self):
        self.seen: set = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        layer = next(m for n, m in model.named_modules() if n.endswith("layers.0"))
        layer.register_forward_hook(
            lambda module, inputs, out: self.seen.add((out[0] if isinstance(out, tuple) else out).dtype)
            if module.training else None)


def lora_weights(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu() for n, p in trainer.model.named_parameters() if "lora_" in n}


def test_sft_trains_lora_over_a_bf16_base_with_paged_adamw_32bit(tiny_llama, tmp_path, monkeypatch):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from ladder.training.supervised import train

    monkeypatch.chdir(tmp_path)
    dtypes = ActivationDtypes()
    trainer, figures, _ = train(params(), DATA, tiny_llama, hardware(), checkpoints=tmp_path / "ck",
                                callbacks=[dtypes])
    assert trainer.args.bf16 and trainer.args.optim == "paged_adamw_32bit"
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # under accelerate's wrapper
    assert isinstance(optimizer, bnb.optim.AdamW) and optimizer.is_paged and optimizer.args.optim_bits == 32
    states = [optimizer.state[p] for group in optimizer.param_groups for p in group["params"]]
    assert states and all(s["state1"].dtype == torch.float32 and s["state1"].is_cuda for s in states)
    assert dtypes.seen == {torch.bfloat16}  # what the layers computed in while training

    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).state_dict()
    for name, param in trainer.model.named_parameters():
        assert param.is_cuda, name
        if "lora_" in name:  # PEFT keeps the adapter in fp32 over a bf16 base: small updates survive
            assert param.requires_grad and param.dtype == torch.float32, name
        else:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert not param.requires_grad and param.dtype == torch.bfloat16, name
            assert torch.equal(param.detach().cpu(), fresh[plain]), name
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it trained
    assert figures["steps"] == 4 and figures["eval_loss"] < figures["eval_loss_base"]


def test_a_stopped_sft_run_resumes_on_the_gpu_to_the_uninterrupted_adapter(tiny_llama, tmp_path, monkeypatch):
    from ladder.training.supervised import train

    monkeypatch.chdir(tmp_path)
    checkpointed = params(save_strategy="steps", save_steps=1)
    whole, _, _ = train(checkpointed, DATA, tiny_llama, hardware(), checkpoints=tmp_path / "a")
    train(checkpointed, DATA, tiny_llama, hardware(), checkpoints=tmp_path / "b", callbacks=[StopAfter(2)])
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    resumed, figures, _ = train(checkpointed, DATA, tiny_llama, hardware(), checkpoints=tmp_path / "b")
    assert figures["steps"] == 4
    a, b = lora_weights(whole), lora_weights(resumed)
    assert a.keys() == b.keys() and a
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    print(f"resumed vs uninterrupted: max |LoRA weight difference| {worst:.3e}")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=RESUME_ATOL, rtol=RESUME_RTOL, msg=name)
    # Not vacuous: the run stopped after two steps is further away than the tolerance.
    stopped = {n: p.detach().float().cpu() for n, p in train(checkpointed, DATA, tiny_llama, hardware(),
                                                               checkpoints=tmp_path / "c",
                                                               callbacks=[StopAfter(2)])[0].model.named_parameters()
               if "lora_" in n}
    assert max(float((a[n] - stopped[n]).abs().max()) for n in a) > 100 * RESUME_ATOL
