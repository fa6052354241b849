"""Quantized models: the bitsandbytes settings the quantize and classifier stages share, and loading any
quantized format back by name.

Names: `int8` (bitsandbytes LLM.int8 with the WSDM judge's settings), `nf4` (bitsandbytes 4-bit NF4 with
double quantization) and `gguf-<type>` (a GGUF file written by ladder.gguf_export, read back by transformers,
which dequantizes it). Layout under the quantize stage's output folder:

    models/quantized/int8/           safetensors + config + tokenizer + generation_config, loads quantized
    models/quantized/nf4/            the same, 4-bit
    models/quantized/gguf/model-<type>.gguf
"""
from __future__ import annotations

import os
from pathlib import Path

BNB_METHODS = ("int8", "nf4")
GGUF_PREFIX = "gguf-"


def bnb_config(method: str, compute_dtype: str = "float32"):
    """The BitsAndBytesConfig for `method` (none | int8 | nf4); None for none.

    int8 is the WSDM Cup judge's configuration: outlier threshold 6.0, no fp16 copy of the weights, no
    skipped modules, no CPU offload. `compute_dtype` is the dtype NF4 layers compute in."""
    import torch
    from transformers import BitsAndBytesConfig

    if method == "none":
        return None
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0, llm_int8_has_fp16_weight=False,
                                  llm_int8_skip_modules=None, llm_int8_enable_fp32_cpu_offload=False)
    if method == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
    raise ValueError(f"quantization must be one of none, {', '.join(BNB_METHODS)}; got {method!r}")


def device_map(cuda: bool) -> dict:
    """bitsandbytes wants the whole model placed on one device at load time: this process's GPU (each
    data-parallel process holds its own copy), or the CPU."""
    return {"": int(os.environ.get("LOCAL_RANK", 0)) if cuda else "cpu"}


def format_names(formats: list[str], gguf_types: list[str]) -> list[str]:
    """The loadable names a quantize run makes: `gguf` stands for one `gguf-<type>` per GGUF type."""
    names = []
    for fmt in formats:
        names.extend(f"{GGUF_PREFIX}{t}" for t in gguf_types) if fmt == "gguf" else names.append(fmt)
    return names


def weight_files(root: str | Path, name: str) -> list[Path]:
    """The files holding a quantized model's weights (for its size on disk)."""
    root = Path(root)
    if name.startswith(GGUF_PREFIX):
        return [root / "gguf" / f"model-{name.removeprefix(GGUF_PREFIX)}.gguf"]
    return sorted((root / name).glob("*.safetensors"))


def compute_in(model, dtype):
    """Cast the weights bitsandbytes left unquantized to `dtype`. A bitsandbytes checkpoint loads them in the
    dtype it was saved with whatever `from_pretrained(dtype=...)` says, and bfloat16 activations on a CPU cost
    more accuracy than the 8-bit weights do."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(dtype)
    return model


def load_quantized(root: str | Path, name: str, dtype: str = "float32", cuda: bool = False):
    """(model, tokenizer) for a quantized model under `root` (models/quantized) by its name.

    Weights kept unquantized (embeddings, norms, lm_head) are stored in 16 bits and computed in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(root)
    if name in BNB_METHODS:
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no quantized model {name!r}: {folder} does not exist")
        model = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map(cuda))
        return compute_in(model, getattr(torch, dtype)).eval(), AutoTokenizer.from_pretrained(folder)
    if name.startswith(GGUF_PREFIX):
        (path,) = weight_files(root, name)
        if not path.is_file():
            raise FileNotFoundError(f"no quantized model {name!r}: {path} does not exist")
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return model.to("cuda" if cuda else "cpu").eval(), tokenizer
    raise ValueError(f"unknown quantized model {name!r}; names are {', '.join(BNB_METHODS)} and "
                     f"{GGUF_PREFIX}<type>")
