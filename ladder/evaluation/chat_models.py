"""The chat models the ladder compares, by name, and how they generate: each loaded with the tokenizer and chat template
saved beside it (the SFT model as base + adapter merged), through transformers' generate or, when asked for,
installed and on a GPU, vLLM.
"""
from __future__ import annotations

import importlib.util

from ladder import paths
from ladder.params import BACKENDS, CHAT_MODELS

VLLM_MODELS = ("base", "merged", "gguf-f16", "gguf-q8_0")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(requested: str, model: str, hw: dict) -> str:
    """vLLM when asked for, installed, on a GPU, and able to serve this model; else transformers."""
    if requested not in BACKENDS:
        raise ValueError(f"inference.backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "vllm" and hw["cuda"] and model in VLLM_MODELS and vllm_installed():
        return "vllm"
    return "hf"


def load_chat_model(name: str, hw: dict):
    """(model, tokenizer) for a chat model by name, with the tokenizer and chat template saved beside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladder.training.merging import sft_merged
    from ladder.export.quantization import load_quantized
    from ladder.training.trainer import compute_dtype, device_name, torch_dtype

    if name not in CHAT_MODELS:
        raise ValueError(f"unknown model {name!r} in inference.models; known: {', '.join(CHAT_MODELS)}")
    dtype = torch_dtype(hw["bf16"])
    device = device_name(hw["cuda"])
    if name in ("base", "merged"):
        path = {"base": paths.BASE, "merged": paths.MERGED}[name]
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval(), AutoTokenizer.from_pretrained(path)
    if name == "sft":
        model = sft_merged(paths.BASE, paths.SFT, dtype=dtype)
        return model.to(device).eval(), AutoTokenizer.from_pretrained(paths.SFT)
    return load_quantized(paths.QUANTIZED, name, dtype=compute_dtype(hw["bf16"]), cuda=hw["cuda"])


def vllm_replies(name: str, prompts: list[list[dict]], n: int, sampling: dict, seed: int) -> list[list[str]]:
    """The same sampling through vLLM (GPU only)."""
    from vllm import LLM, SamplingParams

    from ladder.evaluation.generation import cut_at_stop
    from ladder.export.quantization import GGUF_PREFIX, weight_files

    kwargs = {"model": str(paths.MERGED if name == "merged" else paths.BASE)}
    if name.startswith(GGUF_PREFIX):
        kwargs = {"model": str(weight_files(paths.QUANTIZED, name)[0]), "tokenizer": str(paths.MERGED)}
    llm = LLM(seed=seed, max_model_len=sampling["max_input_tokens"] + sampling["max_new_tokens"], **kwargs)
    stop = list(sampling.get("stop") or [])
    params = SamplingParams(n=n, temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"],
                            max_tokens=sampling["max_new_tokens"], stop=stop or None, seed=seed)
    outputs = llm.chat(prompts, params, add_generation_prompt=True)
    return [[cut_at_stop(c.text, stop) for c in out.outputs] for out in outputs]
