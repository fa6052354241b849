"""What a GPU makes the stages choose: bf16, the attention kernel, and a chat model that really computes in bf16."""
from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from ladder.training.trainer import attn_implementation, hardware, load_causal_lm, stage_hardware

pytestmark = pytest.mark.gpu
FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def test_hardware_choice_is_logged_bf16_and_the_attention_kernel(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ladder.sft")
    hw = stage_hardware("sft", {"seed": 3, "cpu_bf16": "auto"})
    assert hw["cuda"] and hw["device"] == torch.cuda.get_device_name(0)
    assert hw["bf16"] == torch.cuda.is_bf16_supported()
    assert hw["bf16"], "every GPU the pipeline targets (Ampere and later) computes in bf16"
    assert hw["flash_attn"] == FLASH_ATTN
    expected = "flash_attention_2" if FLASH_ATTN else "sdpa"
    assert attn_implementation(hw) == expected
    assert f"attention {expected}" in caplog.text and "'bf16': True" in caplog.text
    assert "process 0 of 1" in caplog.text


def test_chat_model_loads_in_bf16_and_attends_through_sdpa_on_the_gpu(tiny_llama, monkeypatch):
    import torch.nn.functional as F

    from ladder.data.models import load_bundled_chat_tokenizer

    hw = hardware()
    if hw["flash_attn"]:
        pytest.skip("flash-attn is installed: test_flash_attention_2_is_used_when_installed covers this machine")
    model = load_causal_lm(tiny_llama, hw).to("cuda").eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "sdpa"
    calls = []
    real = F.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        calls.append((query.dtype, query.device.type))
        return real(query, key, value, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    seen = []
    hook = model.model.layers[-1].register_forward_hook(
        lambda module, args, out: seen.append((out[0] if isinstance(out, tuple) else out).dtype))
    ids = load_bundled_chat_tokenizer()(["Hello there, how are you?"], return_tensors="pt").to("cuda")
    with torch.inference_mode():
        logits = model(**ids).logits
    hook.remove()
    assert calls == [(torch.bfloat16, "cuda")] * model.config.num_hidden_layers  # one sdpa call per layer
    assert seen == [torch.bfloat16] and logits.device.type == "cuda" and torch.isfinite(logits).all()


@pytest.mark.skipif(not FLASH_ATTN, reason="flash-attn is not installed on this machine")
def test_flash_attention_2_is_used_when_installed(tiny_llama):
    from ladder.data.models import load_bundled_chat_tokenizer

    hw = hardware()
    model = load_causal_lm(tiny_llama, hw).to("cuda").eval()
    assert model.config._attn_implementation == "flash_attention_2"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = load_bundled_chat_tokenizer()(["Hello there"], return_tensors="pt").to("cuda")
    with torch.inference_mode():
        assert torch.isfinite(model(**ids).logits).all()
