"""Quantized and merged models on the GPU: bitsandbytes layers that stay quantized on the device and compute
what their weights say (nf4 in bf16), a bfloat16 merge within a stated tolerance of base + adapters, and vLLM."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from ladder.data.models import load_bundled_chat_tokenizer
from ladder.export.quantization import load_quantized

pytestmark = pytest.mark.gpu
CONVERSATIONS = [[{"role": "user", "content": f"Hello {i}? How are you today?"},
                  {"role": "assistant", "content": f"Hi {i}! I am well, thank you."}] for i in range(3)]
# A bf16 merge computes within 5% of the largest logit of the fp32 stack (1.8% measured on CPU with the
# tiny model; bf16 keeps 8 bits of mantissa through two layers and the tied 49k-row head).
MERGE_TOLERANCE = 0.05
# Relative error of a quantized layer's output against the layer with its original weights, on random input:
# LLM.int8 rounds to 1/127 of each row's absmax; NF4 has 16 levels per block of 64.
QUANTIZED_ERROR = {"int8": 0.03, "nf4": 0.2}


@pytest.mark.parametrize("method", ["int8", "nf4"])
def test_bitsandbytes_model_stays_quantized_on_the_gpu_and_computes_its_weights(method, tiny_llama, tmp_path):
    import bitsandbytes as bnb
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from ladder.export.quantization import quantize_bnb

    quantize_bnb(tiny_llama, tmp_path / method, method, "bfloat16", "bfloat16", cuda=True)
    model, _ = load_quantized(tmp_path, method, dtype="bfloat16", cuda=True)
    layer_class = bnb.nn.Linear8bitLt if method == "int8" else bnb.nn.Linear4bit
    layers = {n: m for n, m in model.named_modules() if isinstance(m, layer_class)}
    assert len(layers) == 7 * model.config.num_hidden_layers  # q k v o gate up down; the tied head stays
    assert all(m.weight.is_cuda for m in layers.values())
    if method == "int8":
        assert all(m.weight.dtype == torch.int8 for m in layers.values())
    else:
        assert all(m.weight.dtype == torch.uint8 and m.weight.quant_type == "nf4" and m.weight.quant_state.nested
                   and m.compute_dtype == torch.bfloat16 for m in layers.values())
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16 and model.model.embed_tokens.weight.is_cuda

    original = load_file(tiny_llama / "model.safetensors")
    name = "model.layers.1.mlp.down_proj"
    layer, weight = layers[name], original[f"{name}.weight"].to("cuda", torch.bfloat16)
    x = torch.randn(8, weight.shape[1], device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        out = layer(x)
        exact = F.linear(x.float(), weight.float())
    assert out.dtype == torch.bfloat16 and out.is_cuda
    error = float((out.float() - exact).norm() / exact.norm())
    print(f"{method}: relative error of {name} against its original weights {error:.4f}")
    assert 0 < error < QUANTIZED_ERROR[method]
    if method == "nf4":  # the bf16 compute is the dequantized weights' product, to bf16 rounding
        dequantized = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        assert dequantized.dtype == torch.bfloat16
        with torch.inference_mode():
            torch.testing.assert_close(out.float(), F.linear(x, dequantized).float(), atol=2e-2, rtol=2e-2)
    ids = load_bundled_chat_tokenizer()(["Hello there, how are you?"], return_tensors="pt").to("cuda")
    with torch.inference_mode():
        assert torch.isfinite(model(**ids).logits.float()).all()


@pytest.fixture(scope="module")
def stack_dirs(tiny_llama, tmp_path_factory):
    """The tiny base and two adapters with random, non-zero LoRA weights (PEFT's merge-test recipe)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("stack")
    torch.manual_seed(1)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                   LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False,
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"])
                   ).save_pretrained(root / "sft")
    merged_sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), root / "sft").merge_and_unload()
    get_peft_model(merged_sft, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False,
                                          target_modules=["q_proj", "v_proj"])).save_pretrained(root / "dpo")
    return root


def test_bfloat16_merge_on_the_gpu_is_within_tolerance_of_base_plus_adapters(tiny_llama, stack_dirs):
    from ladder.training.chat import render
    from ladder.training.merging import merged_from, stacked

    tokenizer = load_bundled_chat_tokenizer()
    stack = stacked(tiny_llama, stack_dirs / "sft", stack_dirs / "dpo")  # fp32 on the CPU: the reference
    merged = merged_from(stack, "bfloat16").to("cuda")
    assert {(p.dtype, p.device.type) for p in merged.parameters()} == {(torch.bfloat16, "cuda")}
    assert not any("lora" in n for n, _ in merged.named_parameters())
    worst = scale = unmerged = 0.0
    with torch.inference_mode():
        for messages in CONVERSATIONS:
            ids = tokenizer(render(messages, tokenizer), return_tensors="pt", add_special_tokens=False)
            reference = stack(**ids).logits.float()
            got = merged(**{k: v.to("cuda") for k, v in ids.items()}).logits.float().cpu()
            worst, scale = max(worst, float((got - reference).abs().max())), max(scale, float(reference.abs().max()))
            with stack.disable_adapter():
                unmerged = max(unmerged, float((stack(**ids).logits.float() - reference).abs().max()))
    print(f"bf16 merge on the GPU: max |logit difference| {worst:.4f}, largest logit {scale:.4f}")
    assert 0 < worst <= MERGE_TOLERANCE * scale
    assert unmerged > MERGE_TOLERANCE * scale  # not vacuous: leaving out the DPO adapter is caught


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed on this machine")
def test_vllm_generates_sampled_replies_from_the_merged_model(tiny_llama, stack_dirs, tmp_path, monkeypatch):
    from ladder.training.chat import use_template
    from ladder.training.trainer import hardware
    from ladder.evaluation.chat_models import choose_backend, vllm_replies
    from ladder.training.merging import merged_from, stacked

    monkeypatch.chdir(tmp_path)
    merged = merged_from(stacked(tiny_llama, stack_dirs / "sft", stack_dirs / "dpo"), "bfloat16")
    merged.save_pretrained(tmp_path / "models/merged", safe_serialization=True)
    use_template(load_bundled_chat_tokenizer(), "chatml").save_pretrained(tmp_path / "models/merged")
    assert choose_backend("vllm", "merged", hardware()) == "vllm"
    prompts = [m[:1] for m in CONVERSATIONS]
    sampling = {"max_input_tokens": 64, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "top_k": 50,
                "stop": ["\n"]}
    replies = vllm_replies("merged", prompts, 2, sampling, seed=0)
    assert len(replies) == len(prompts) and all(len(r) == 2 for r in replies)
    assert all(isinstance(text, str) and "\n" not in text for r in replies for text in r)
