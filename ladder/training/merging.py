"""Merging LoRA adapters into their base, and checking the result: base + SFT (where DPO starts, and what the ladder
calls `sft`), base + SFT + DPO as one standalone model, the parity of its logits with the unmerged stack, and the
model card saved with it (the merge stage's docstring says why the parity check computes in float64).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from ladder.params import DTYPES, PARITY_DTYPES


def sft_merged(base: str | Path, sft: str | Path, dtype, **load):
    """The base causal LM (loaded in `dtype`, with `load` passed to from_pretrained) with the SFT adapter merged in:
    the SFT model as a plain model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, **load)
    return PeftModel.from_pretrained(model, sft).merge_and_unload()


def stacked(base: str | Path, sft: str | Path, dpo: str | Path):
    """Base with the SFT adapter merged, the DPO adapter on top (unmerged): what training produced, in fp32."""
    import torch
    from peft import PeftModel

    return PeftModel.from_pretrained(sft_merged(base, sft, dtype=torch.float32), dpo).eval()


def merged_from(stack, dtype: str):
    import copy

    import torch

    if dtype not in DTYPES:
        raise ValueError(f"merge.dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return copy.deepcopy(stack).merge_and_unload().to(getattr(torch, dtype)).eval()


@contextlib.contextmanager
def computed_in(model, dtype: str = "float64"):
    """Compute `model` in `dtype` for the duration: every floating parameter and buffer is cast in place and
    cast back afterwards, to the dtype each had (exact for float64, which holds every float32, float16 and
    bfloat16; for float32, exact for the 16-bit and float32 models the merge compares)."""
    import torch

    if dtype not in PARITY_DTYPES:
        raise ValueError(f"merge.parity_dtype must be one of {', '.join(PARITY_DTYPES)}, not {dtype!r}")
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    for t in tensors:
        t.data = t.data.to(getattr(torch, dtype))
    try:
        yield model
    finally:
        for t, dtype in zip(tensors, dtypes):
            t.data = t.data.to(dtype)


def logits_in(model, tokenizer, conversations: list[list[dict]], dtype: str = "float64") -> list:
    import torch

    from ladder.training.chat import render

    with computed_in(model, dtype), torch.inference_mode():
        return [model(**tokenizer(render(m, tokenizer), return_tensors="pt", add_special_tokens=False)).logits.cpu()
                for m in conversations]


def max_logit_difference(reference, candidate, tokenizer, conversations: list[list[dict]],
                         dtype: str = "float64") -> float:
    """max |logits(reference) - logits(candidate)| over the tokens of a few rendered conversations, both models
    computed in `dtype`: in float64, the weights' own difference, free of float32 rounding in the forward pass."""
    expected = logits_in(reference, tokenizer, conversations, dtype)
    got = logits_in(candidate, tokenizer, conversations, dtype)
    return max(float((a - b).abs().max()) for a, b in zip(expected, got))
