"""Quantized formats: each saves, loads back by name and computes close to the model it came from."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ladder.gguf_export import check_supported, export_gguf
from ladder.models import tiny_model
from ladder.quantization import bnb_config, format_names, load_quantized, weight_files
from stages.quantize import fidelity, main, quantize_bnb, sizes

# hidden 32 so rows fill whole q8_0 blocks (32 values); 4 query heads over 2 key/value heads; weights large
# enough that the next-token distribution is far from uniform and top-1 agreement means something
SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "initializer_range": 0.2}
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


@pytest.mark.parametrize("name, max_kl, min_top1", [("int8", 0.01, 0.95), ("nf4", 0.3, 0.25),
                                                     ("gguf-f16", 1e-5, 0.99), ("gguf-q8_0", 1e-3, 0.95)])
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

    root = quantized[0]
    for name, layer in (("int8", bnb.nn.Linear8bitLt), ("nf4", bnb.nn.Linear4bit)):
        model, _ = load_quantized(root / "quantized", name)
        assert isinstance(model.model.layers[1].mlp.down_proj, layer)
        assert model.model.layers[1].mlp.down_proj.weight.dtype in (torch.int8, torch.uint8)
        assert model.model.embed_tokens.weight.dtype == torch.float32
        config = json.loads((root / "quantized" / name / "config.json").read_text())["quantization_config"]
        assert config["load_in_8bit" if name == "int8" else "load_in_4bit"] is True


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
    # nf4's per-tensor constants (a 16-value code book, nested scales) weigh a lot next to 64x32 weights
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
    model, tokenizer = tiny_model("llama", seed=0)  # hidden 16: only down_proj rows (32 values) fill a block
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


def test_stage_rejects_an_unknown_format_before_doing_work(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("quantize:\n  formats: [int8, int3]\n  gguf_types: [f16]\n")
    result = CliRunner().invoke(main, ["--params", str(params)])
    assert result.exit_code != 0 and "int3" in result.output


def test_fidelity_is_zero_for_the_same_model_and_positive_for_another():
    model, tokenizer = tiny_model("llama", seed=0, **SHAPE)
    other, _ = tiny_model("llama", seed=1, **SHAPE)
    same = fidelity(model, model, batches(tokenizer))
    assert same["kl_mean"] < 1e-6 and same["top1_agreement"] == 1.0 and same["perplexity_change"] == 0.0
    different = fidelity(model, other, batches(tokenizer))
    assert different["kl_mean"] > 1.0 and different["top1_agreement"] < 0.2  # far above every tolerance above


def test_format_names():
    assert format_names(["int8", "gguf", "nf4"], ["f16", "q8_0"]) == ["int8", "gguf-f16", "gguf-q8_0", "nf4"]
