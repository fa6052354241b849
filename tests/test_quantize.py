"""Quantized formats: each saves, loads back by name and computes close to the model it came from."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ladder.export.gguf_export import check_supported, export_gguf
from ladder.data.models import tiny_model
from ladder.export.quantization import (NF4_BLOCKSIZE, bnb_config, bnb_shape_problems, format_names, load_quantized,
                                 model_skeleton, quantizable_layers, weight_files)
from ladder.export.fidelity import fidelity, generation_speed, sizes
from ladder.export.quantization import quantize_bnb
from stages.quantize import main

# 4 query heads over 2 key/value heads of 32, so every layer's in and out features are multiples of 64 (both
# bitsandbytes CPU paths take it) and rows fill whole q8_0 blocks; weights large enough that the next-token
# distribution is far from uniform and top-1 agreement means something
SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
         "initializer_range": 0.1}
# The tiny model's shape before it was widened: k_proj and v_proj had 8 outputs, every layer 16 or 32 inputs
NARROW = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}
TEXTS = ["<|im_start|>user\nHello there, how are you today?<|im_end|>\n<|im_start|>assistant\nFine, thanks!",
         "<|im_start|>user\nTell me a story about a dragon.<|im_end|>\n<|im_start|>assistant\nOnce upon a time"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A tiny merged model and every format made from it, as the stage lays them out."""
    root = tmp_path_factory.mktemp("quantize")
    model, tokenizer = tiny_model("llama", seed=3, **SHAPE)
    model.save_pretrained(root / "merged")
    tokenizer.save_pretrained(root / "merged")
    out = root / "quantized"
    (out / "gguf").mkdir(parents=True)
    for method in ("int8", "nf4"):
        quantize_bnb(root / "merged", out / method, method, "bfloat16", "float32", cuda=False)
    counts = {t: export_gguf(root / "merged", out / "gguf" / f"model-{t}.gguf", t) for t in ("f16", "q8_0")}
    return root, model.eval(), tokenizer, counts


def batches(tokenizer):
    return [tokenizer(t, return_tensors="pt", add_special_tokens=False).input_ids for t in TEXTS]


# Measured on a CPU with AVX512-BF16 (nf4 then computes in bfloat16): int8 0.0009 / 0.925, nf4 0.074 / 0.35,
# gguf-f16 1e-6 / 1.0, gguf-q8_0 0.0004 / 0.95 (mean KL / top-1 agreement over 40 positions, where one
# flipped near-tie costs 0.025); the bounds leave room for other CPUs' kernels.
@pytest.mark.parametrize("name, max_kl, min_top1", [("int8", 0.005, 0.8), ("nf4", 0.25, 0.2),
                                                     ("gguf-f16", 1e-5, 0.95), ("gguf-q8_0", 0.003, 0.85)])
def test_every_format_loads_back_by_name_and_computes_close(quantized, name, max_kl, min_top1):
    root, original, tokenizer, _ = quantized
    model, loaded_tokenizer = load_quantized(root / "quantized", name)
    figures = fidelity(original, model, batches(tokenizer))
    assert figures["kl_mean"] < max_kl and figures["top1_agreement"] >= min_top1, figures
    assert loaded_tokenizer(TEXTS[0]).input_ids == tokenizer(TEXTS[0]).input_ids
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    assert model(batches(tokenizer)[0]).logits.shape == (1, batches(tokenizer)[0].shape[1], len(tokenizer))


def test_bitsandbytes_formats_stay_quantized_and_compute_in_float32(quantized):
    import bitsandbytes as bnb

    root, original, tokenizer, _ = quantized
    for name, layer in (("int8", bnb.nn.Linear8bitLt), ("nf4", bnb.nn.Linear4bit)):
        model, _ = load_quantized(root / "quantized", name)
        assert isinstance(model.model.layers[1].mlp.down_proj, layer)
        # the shape check lists exactly the layers transformers replaced
        replaced = {n for n, m in model.named_modules() if isinstance(m, layer)}
        assert replaced == set(quantizable_layers(original)) and len(replaced) == 14
        assert model.model.layers[1].mlp.down_proj.weight.dtype in (torch.int8, torch.uint8)
        assert model.model.embed_tokens.weight.dtype == torch.float32
        config = json.loads((root / "quantized" / name / "config.json").read_text())["quantization_config"]
        assert config["load_in_8bit" if name == "int8" else "load_in_4bit"] is True


def test_nf4_takes_the_packed_cpu_kernel_where_the_cpu_has_avx512_bf16(quantized):
    """On a CPU with AVX512-BF16 an eval-mode forward repacks every 4-bit weight for bitsandbytes' fused kernel
    (the path that failed on the old tiny shapes); elsewhere the weights stay as saved. Either way the
    quantization block is the one the shape check assumes."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    root, _, tokenizer, _ = quantized
    model, _ = load_quantized(root / "quantized", "nf4")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert {m.weight.quant_state.blocksize for m in layers} == {NF4_BLOCKSIZE}
    with torch.inference_mode():
        logits = model(batches(tokenizer)[0]).logits
    assert torch.isfinite(logits).all()
    packed = {getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers}
    assert packed == {has_avx512bf16()}


@pytest.mark.parametrize("in_features, out_features",
                         [(64, 32), (128, 64), (192, 96), (64, 8), (64, 48), (32, 64), (96, 64), (16, 8)])
def test_the_nf4_shape_rule_is_the_one_bitsandbytes_packs_by(in_features, out_features):
    """bitsandbytes' own repacking for its AVX512-BF16 kernel is plain torch, so it runs on any CPU: it
    fails on exactly the shapes the check refuses."""
    import bitsandbytes.functional as F

    torch.manual_seed(0)
    weight, state = F.quantize_4bit(torch.randn(out_features, in_features), blocksize=NF4_BLOCKSIZE,
                                    compress_statistics=True, quant_type="nf4")
    refused = bool(bnb_shape_problems({"layer": (in_features, out_features)}, "nf4"))
    try:
        packed, _ = F._convert_weight_packed_for_cpu(weight, state)
    except (AssertionError, RuntimeError):
        assert refused
    else:
        assert not refused and packed.shape == (out_features, in_features // 2)


def test_shape_check_names_every_layer_bitsandbytes_cannot_pack():
    narrow, _ = tiny_model("llama", seed=0, **NARROW)
    problems = bnb_shape_problems(narrow, "nf4")
    assert len(problems) == 14 and not any("lm_head" in p or "embed" in p for p in problems)
    assert "model.layers.0.self_attn.k_proj (in 16, out 8): out_features 8 is not a multiple of 32 and " \
           "in_features 16 is not a multiple of 64" in problems[1]
    assert bnb_shape_problems(narrow, "int8") == []  # LLM.int8 on CPU takes any shape
    for model in (tiny_model("llama")[0], tiny_model("bert")[0], tiny_model("llama", **SHAPE)[0]):
        assert bnb_shape_problems(model, "nf4") == []
    with pytest.raises(ValueError, match="fp4"):
        bnb_shape_problems({}, "fp4")


def test_stage_refuses_a_model_it_cannot_quantize_before_doing_work(tmp_path, monkeypatch, write_params):
    from transformers import LlamaConfig

    # 8 heads of 8 over one key/value head: only k_proj and v_proj (8 outputs) break the rule
    LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=1,
                num_hidden_layers=2, vocab_size=256).save_pretrained(tmp_path / "models" / "merged")
    assert len(bnb_shape_problems(model_skeleton(tmp_path / "models" / "merged"), "nf4")) == 4
    write_params(tmp_path / "params.yaml", {"quantize": {"formats": ["int8", "nf4"], "gguf_types": ["f16"]}})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--params", "params.yaml"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a message, no traceback
    assert result.output.strip().splitlines() == [
        "Error: models/merged cannot be quantized to nf4: model.layers.0.self_attn.k_proj (in 64, out 8): "
        "out_features 8 is not a multiple of 32, which bitsandbytes' packed 4-bit CPU kernel (AVX512-BF16 "
        "CPUs) needs (and 3 more layers)"]
    assert not (tmp_path / "models" / "quantized").exists()


def test_int8_is_the_wsdm_configuration():
    config = bnb_config("int8")
    assert (config.load_in_8bit, config.llm_int8_threshold, config.llm_int8_has_fp16_weight,
            config.llm_int8_skip_modules, config.llm_int8_enable_fp32_cpu_offload) == (True, 6.0, False, None, False)
    nf4 = bnb_config("nf4", "bfloat16")
    assert (nf4.bnb_4bit_quant_type, nf4.bnb_4bit_use_double_quant, nf4.bnb_4bit_compute_dtype) == \
        ("nf4", True, torch.bfloat16)
    assert bnb_config("none") is None


def test_sizes_count_the_quantized_layers(quantized):
    root, original, _, counts = quantized
    numels = {k: v.numel() for k, v in original.state_dict().items()}
    linear = sum(v for k, v in numels.items() if k.startswith("model.layers.") and k.endswith("proj.weight"))
    ratios = {}
    # nf4's per-tensor constants (a 16-value code book, nested scales) weigh a lot next to tiny weights
    for name, low, high in (("int8", 0.5, 0.7), ("nf4", 0.25, 0.8), ("gguf-q8_0", 0.53, 0.54)):
        size = sizes(weight_files(root / "quantized", name), numels)
        assert size["quantized_numel"] >= linear  # q8_0 also quantizes the embedding, as llama.cpp does
        ratios[name] = size["quantized_bytes"] / (2 * size["quantized_numel"])
        assert low <= ratios[name] <= high, (name, size)
    from safetensors import safe_open

    with safe_open(weight_files(root / "quantized", "nf4")[0], "pt") as st:  # the weights alone: 4 bits each
        assert st.get_tensor("model.layers.0.mlp.down_proj.weight").numel() == numels["model.layers.0.mlp.down_proj.weight"] // 2
    assert sizes(weight_files(root / "quantized", "gguf-f16"), numels)["quantized_numel"] == 0
    assert counts["q8_0"] == {"q8_0": 15, "f32": 5} and counts["f16"] == {"f16": 15, "f32": 5}


def test_q8_0_falls_back_to_f16_for_rows_that_do_not_fill_a_block(tmp_path):
    model, tokenizer = tiny_model("llama", seed=0, **NARROW)  # only down_proj rows (32 values) fill a block
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert export_gguf(tmp_path, tmp_path / "m.gguf", "q8_0") == {"q8_0": 2, "f16": 13, "f32": 5}


def test_unsupported_architecture_and_bad_names_are_clear_errors(quantized):
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        check_supported(GPT2Config(architectures=["GPT2LMHeadModel"]))
    with pytest.raises(ValueError, match="q4_k"):
        export_gguf(quantized[0] / "merged", quantized[0] / "x.gguf", "q4_k")
    with pytest.raises(ValueError, match="int4"):
        bnb_config("int4")
    with pytest.raises(ValueError, match="fp8"):
        load_quantized(quantized[0] / "quantized", "fp8")
    with pytest.raises(FileNotFoundError, match="gguf-bf16"):
        load_quantized(quantized[0] / "quantized", "gguf-bf16")


def test_stage_rejects_an_unknown_format_before_doing_work(tmp_path, write_params):
    params = write_params(tmp_path / "params.yaml", {"quantize": {"formats": ["int8", "int3"], "gguf_types": ["f16"]}})
    result = CliRunner().invoke(main, ["--params", str(params)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {params}: quantize.formats.1 = 'int3': Input should be 'int8', 'nf4' or 'gguf'"]


def test_fidelity_is_zero_for_the_same_model_and_positive_for_another():
    model, tokenizer = tiny_model("llama", seed=0, **SHAPE)
    other, _ = tiny_model("llama", seed=1, **SHAPE)
    same = fidelity(model, model, batches(tokenizer))
    assert same["kl_mean"] < 1e-6 and same["top1_agreement"] == 1.0 and same["perplexity_change"] == 0.0
    different = fidelity(model, other, batches(tokenizer))
    assert different["kl_mean"] > 1.0 and different["top1_agreement"] < 0.2  # far above every tolerance above


def test_format_names():
    assert format_names(["int8", "gguf", "nf4"], ["f16", "q8_0"]) == ["int8", "gguf-f16", "gguf-q8_0", "nf4"]


def test_generation_speed_leaves_the_first_call_out_of_the_timing():
    """A model's first generate on a GPU pays for loading kernels; the figure is the tokens/s of a later one."""
    import time

    from transformers import BatchEncoding

    class FirstCallSlow:
        device = torch.device("cpu")

        def __init__(self):
            self.asked: list[int] = []

        def generate(self, max_new_tokens, min_new_tokens, **kwargs):
            self.asked.append(max_new_tokens)
            time.sleep(1.0 if len(self.asked) == 1 else 0.05)

    class Tokenizer:
        pad_token_id = 0

        def __call__(self, text, **kwargs):
            return BatchEncoding({"input_ids": torch.tensor([[1, 2]])})

    model = FirstCallSlow()
    speed = generation_speed(model, Tokenizer(), "Hi", 32)
    assert model.asked == [2, 32]  # a short untimed call, then the timed one
    assert 32 / 0.5 < speed <= 32 / 0.05  # one second of setup would have made it under 32 tokens/s
