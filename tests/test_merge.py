"""Merging base + SFT + DPO adapters: the merged model computes what the stack computed."""
from __future__ import annotations

import pytest
import torch

from ladder.data.models import load_bundled_chat_tokenizer, materialize
from ladder.training.merging import computed_in, logits_in, max_logit_difference, merged_from, stacked
from ladder.training.model_card import model_card

CONVERSATIONS = [[{"role": "user", "content": f"Hello {i}?"}, {"role": "assistant", "content": f"Hi {i}!"}]
                 for i in range(3)]


@pytest.fixture(scope="module")
def stack_dirs(tmp_path_factory):
    """Tiny base and two adapters with random, non-zero LoRA weights (PEFT's merge-test recipe)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("stack")
    materialize("tiny:llama", root / "base", seed=0)
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False,
                                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"])
                   ).save_pretrained(root / "sft")
    merged_sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base"),
                                           root / "sft").merge_and_unload()
    get_peft_model(merged_sft, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False,
                                          target_modules=["q_proj", "v_proj"])).save_pretrained(root / "dpo")
    return root


def test_merged_float32_matches_the_stack(stack_dirs):
    tokenizer = load_bundled_chat_tokenizer()
    stack = stacked(stack_dirs / "base", stack_dirs / "sft", stack_dirs / "dpo")
    merged = merged_from(stack, "float32")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # Both computed in float64, what is left is the merged weights' rounding to float32 (1.3e-7 measured),
    # whatever the CPU's float32 kernels would have added; the project's bar for the stage is 1e-3.
    assert max_logit_difference(stack, merged, tokenizer, CONVERSATIONS) < 1e-5
    # The check is not vacuous: the stack without its DPO adapter differs.
    with stack.disable_adapter():
        plain = max_logit_difference(stack, merged, tokenizer, CONVERSATIONS)
    assert plain > 1e-3


def test_the_float64_check_leaves_the_model_as_it_was(stack_dirs):
    """The parity check casts the model to float64 and back in place: the merged model is saved afterwards,
    so every weight and buffer must come back with its dtype and bits."""
    tokenizer = load_bundled_chat_tokenizer()
    stack = stacked(stack_dirs / "base", stack_dirs / "sft", stack_dirs / "dpo")
    merged = merged_from(stack, "bfloat16")
    before = {n: t.clone() for n, t in [*merged.named_parameters(), *merged.named_buffers()]}
    (logits,) = logits_in(merged, tokenizer, CONVERSATIONS[:1])
    assert logits.dtype == torch.float64
    after = dict([*merged.named_parameters(), *merged.named_buffers()])
    assert all(after[n].dtype == t.dtype and torch.equal(after[n], t) for n, t in before.items())
    with pytest.raises(RuntimeError, match="stop"), computed_in(merged):
        assert merged.lm_head.weight.dtype == torch.float64
        raise RuntimeError("stop")
    assert merged.lm_head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="parity_dtype"):
        logits_in(merged, tokenizer, CONVERSATIONS[:1], "float16")


def test_sixteen_bit_merge_is_close_and_really_sixteen_bit(stack_dirs):
    tokenizer = load_bundled_chat_tokenizer()
    stack = stacked(stack_dirs / "base", stack_dirs / "sft", stack_dirs / "dpo")
    merged = merged_from(stack, "bfloat16")
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert max_logit_difference(stack, merged.float(), tokenizer, CONVERSATIONS) < 0.5
    with pytest.raises(ValueError, match="int4"):
        merged_from(stack, "int4")


def test_model_card_names_data_params_and_metrics_and_no_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_print_me")
    card = model_card({"sources": {"chai": {"format": "chai_feedback", "path": "x"}},
                       "hub_sources": {"dpo": {"format": "chai_dpo", "hub": "a/b", "revision": None}},
                       "base_model": "tiny:llama"},
                      {"chat_template": "base", "max_length": 64, "lora": {"r": 4}, "trainer": {"max_steps": 2}},
                      {"method": "dpo", "loss_type": "sigmoid", "beta": 0.1, "lora": {"r": 4}, "trainer": {}},
                      {"dtype": "float32", "generation": {"temperature": 0.6}},
                      {"sft": {"eval_loss": 2.5}, "dpo": {"reward_accuracy": 0.75}})
    assert "tiny:llama" in card and "chai (chai_feedback), dpo (chai_dpo)" in card and "0.75" in card and "2.5" in card
    assert "hf_do_not_print_me" not in card


@pytest.mark.parametrize("dpo, says, not_says", [
    ({"method": "dpo", "loss_type": "ipo"}, '`dpo` {"loss_type": ["ipo"]}', "kto"),
    ({"method": "kto", "loss_type": "sigmoid", "kto": {"loss_type": "kto", "desirable_weight": 1.0}},
     '`kto` {"loss_type": "kto", "desirable_weight": 1.0}', "sigmoid"),
])
def test_model_card_names_the_preference_methods_own_settings(dpo, says, not_says):
    card = model_card({"sources": {}, "hub_sources": {}, "base_model": "tiny:llama"},
                      {"chat_template": "base", "max_length": 64, "lora": {}, "trainer": {}},
                      dpo | {"beta": 0.1, "simpo_gamma": 0.5, "lora": {}, "trainer": {}},
                      {"dtype": "float32", "generation": {}}, {})
    line = next(line for line in card.splitlines() if line.startswith("- Preference tuning"))
    assert says in line and not_says not in line
