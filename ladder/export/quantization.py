"""Quantized models: the bitsandbytes settings the quantize and classifier stages share, quantizing through them, and
loading any quantized format back by name (ladder/export/fidelity.py measures them against the merged model).

Names: `int8` (bitsandbytes LLM.int8 with the WSDM judge's settings), `nf4` (bitsandbytes 4-bit NF4 with
double quantization) and `gguf-<type>` (a GGUF file written by ladder.export.gguf_export, read back by transformers,
which dequantizes it). Layout under the quantize stage's output folder:

    models/quantized/int8/           safetensors + config + tokenizer + generation_config, loads quantized
    models/quantized/nf4/            the same, 4-bit
    models/quantized/gguf/model-<type>.gguf
"""
from __future__ import annotations

import os
from pathlib import Path

from ladder.params import BNB_METHODS

GGUF_PREFIX = "gguf-"
# bitsandbytes 0.50's packed 4-bit CPU kernel (see bnb_shape_problems): output features per block, and the
# number of weights one 4-bit scale covers (Params4bit's default block size; transformers does not change it)
NF4_BLOCK_N = 32
NF4_BLOCKSIZE = 64


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


def quantize_bnb(merged: Path, target: Path, method: str, dtype: str, compute_dtype: str, cuda: bool) -> None:
    """Load the merged model through bitsandbytes and save it quantized, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(merged, quantization_config=bnb_config(method, compute_dtype),
                                                 dtype=getattr(torch, dtype), device_map=device_map(cuda))
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(merged).save_pretrained(target)


def quantizable_layers(model) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every layer transformers' bitsandbytes integration replaces in `model`
    (a meta-device skeleton is enough): each plain nn.Linear or GPT-2 Conv1D outside the modules it keeps,
    which with no skipped modules are the output embedding, tied weights and the last module."""
    import torch
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    keep = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    layers = {}
    for name, module in model.named_modules():
        if not should_convert_module(name, keep):
            continue
        if type(module) is torch.nn.Linear:
            layers[name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            in_features, out_features = module.weight.shape
            layers[name] = (in_features, out_features)
    return layers


def bnb_shape_problems(model_or_layers, method: str) -> list[str]:
    """One line per quantizable layer whose shape a bitsandbytes CPU path cannot take, for `method` (int8 or
    nf4); empty when every layer works. `model_or_layers` is a model or {name: (in_features, out_features)}.

    The rule is the union of both CPU paths, so the answer is the same on every machine (a model quantized on
    a GPU or an older CPU is loaded on CPUs of either kind later). Read in bitsandbytes 0.50 (nn/modules.py,
    functional.py, backends/cpu/ops.py, csrc/cpu_ops.cpp):

    - 4-bit (nf4, and fp4 alike), generic path: the C++ dequantize kernel (an odd in_features falls back to a
      torch implementation) then a plain matmul; any shape works. It is the path on CPUs without AVX512-BF16,
      and during training.
    - 4-bit, packed path: `Linear4bit.forward` on a CPU input, when `functional.has_avx512bf16()` (the native
      library's CPUID check: leaf 7, sub-leaf 1, EAX bit 5), the module is in eval mode and the input needs no
      gradient. Its first call repacks the weight for the fused kernel (`_convert_weight_packed_for_cpu`,
      block_n = 32), which asserts `out_features % 32 == 0` ("N must be divisible by block_n") and an even
      in_features, and lays the scales out as [out_features, in_features / blocksize], which fails unless
      `in_features % 64 == 0`. The kernel (`gemv_4bit_inference_cpu_{nf4,fp4}_bf16`, or kernels-community's
      `gemm_4bit_forward` when the `kernels` package is installed) then walks the outputs in blocks of 32 and
      the inputs in whole 64-value quantization blocks, and computes in bfloat16 whatever the compute dtype.
      Saving repacks the other way under the same assertions.
    - int8 (LLM.int8): inference quantizes the activations row-wise and multiplies with `torch._int_mm` where
      torch's CPU capability is AVX512 (torch >= 2.6), otherwise in float32; training dequantizes the weight.
      No path constrains the shape (in x out of 3 x 1, 7 x 5 and 17 x 33 all run), so int8 has no problems.
    """
    if method not in BNB_METHODS:
        raise ValueError(f"bitsandbytes method must be one of {', '.join(BNB_METHODS)}; got {method!r}")
    layers = model_or_layers if isinstance(model_or_layers, dict) else quantizable_layers(model_or_layers)
    if method == "int8":
        return []
    problems = []
    for name, (in_features, out_features) in layers.items():
        broken = []
        if out_features % NF4_BLOCK_N:
            broken.append(f"out_features {out_features} is not a multiple of {NF4_BLOCK_N}")
        if in_features % NF4_BLOCKSIZE:
            broken.append(f"in_features {in_features} is not a multiple of {NF4_BLOCKSIZE}")
        if broken:
            problems.append(f"{name} (in {in_features}, out {out_features}): {' and '.join(broken)}, which "
                            "bitsandbytes' packed 4-bit CPU kernel (AVX512-BF16 CPUs) needs")
    return problems


def model_skeleton(folder: str | Path, causal_lm: bool = True):
    """The model saved in `folder` (its causal LM, or with `causal_lm=False` the bare backbone), built on the
    meta device from its config: its layers and their shapes, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config)


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

    from ladder.training.trainer import device_name

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
        return model.to(device_name(cuda)).eval(), tokenizer
    raise ValueError(f"unknown quantized model {name!r}; names are {', '.join(BNB_METHODS)} and "
                     f"{GGUF_PREFIX}<type>")
