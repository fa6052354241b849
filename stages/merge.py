"""merge: base + SFT adapter + DPO adapter into one standalone model, checked against the unmerged stack.

Reads   models/base, models/sft, models/dpo, metrics/{sft,dpo}.json, data/scored/sft.parquet (eval conversations
        for the parity check), params `merge` (dtype, parity_dtype, parity_conversations, generation) and, for the model
        card, `fetch.base_model`, `sft`, `dpo`.
Writes  models/merged (weights in merge.dtype, tokenizer with the training chat template, generation_config.json
        with the serving settings, README.md model card), metrics/merge.json (max |logit difference| between the
        merged model and base + adapters, both computed in merge.parity_dtype), metrics/timings/merge.json.

Merging happens in float32 and the result is cast to `merge.dtype` (a 16-bit type for serving, or float32);
quantization is a later stage that starts from this model, never the reverse. The parity check computes both
models in `merge.parity_dtype`, float64 by default (each cast in place and back, which is exact), so it measures
what the merge changed, not how a CPU's float32 kernels happen to round: float32 logits of one and the same model
differ between CPUs, and between two layouts of the same weights, by more than the merge does. float64 holds the
model at 8 bytes per parameter for the check (about 96 GB for a 12B model): large models check in float32.

Usage:
    python -m stages.merge
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

from ladder.stage import stage

log = logging.getLogger("ladder.merge")
DTYPES = ("float16", "bfloat16", "float32")
PARITY_DTYPES = ("float64", "float32")


def stacked(base: str | Path, sft: str | Path, dpo: str | Path):
    """Base with the SFT adapter merged, the DPO adapter on top (unmerged): what training produced, in fp32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, sft).merge_and_unload()
    return PeftModel.from_pretrained(model, dpo).eval()


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

    from ladder.chat import render

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


def model_card(fetch: dict, sft: dict, dpo: dict, merge: dict, metrics: dict) -> str:
    """What the model is made of and how it scored: the data, the params, the headline numbers; no secrets
    (nothing from the environment is read here)."""
    sources = ", ".join(f"{name} ({spec['format']})" for name, spec in fetch["sources"].items())
    lines = [
        "# ladder chat model", "",
        f"Base model: `{fetch['base_model']}`" + (f" @ `{fetch['base_revision']}`" if fetch.get("base_revision") else ""),
        f"Data sources: {sources}.", "",
        "Made by the ladder pipeline: LoRA SFT on reward-filtered conversations, then preference tuning from the",
        "SFT model, both adapters merged into this standalone model.", "",
        "## Settings", "",
        f"- SFT: chat template `{sft['chat_template']}`, max length {sft['max_length']}, LoRA {json.dumps(sft['lora'])},"
        f" trainer {json.dumps(sft['trainer'])}",
        f"- Preference tuning: method `{dpo['method']}`, loss `{dpo['loss_type']}`, beta {dpo['beta']},"
        f" LoRA {json.dumps(dpo['lora'])}, trainer {json.dumps(dpo['trainer'])}",
        f"- Merged in float32, saved as `{merge['dtype']}`; generation defaults {json.dumps(merge['generation'])}", "",
        "## Metrics", "",
        *[f"- {stage}: {json.dumps(values)}" for stage, values in metrics.items()], ""]
    return "\n".join(lines)


@stage("merge")
def main(params: dict) -> None:
    import polars as pl
    from transformers import AutoTokenizer, GenerationConfig

    from ladder.io import atomic_path, write_json

    merge = params["merge"]
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained("models/dpo")
    stack = stacked("models/base", "models/sft", "models/dpo")
    model = merged_from(stack, merge["dtype"])
    eval_rows = pl.read_parquet("data/scored/sft.parquet").filter(pl.col("split") == "eval").sort("id")
    conversations = eval_rows["messages"].to_list()[:merge["parity_conversations"]]
    difference = max_logit_difference(stack, model, tokenizer, conversations, merge["parity_dtype"])
    metrics = {s: json.loads(Path(f"metrics/{s}.json").read_text()) for s in ("sft", "dpo")}
    with atomic_path("models/merged") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(do_sample=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **merge["generation"]).save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(params["fetch"], params["sft"], params["dpo"], merge, metrics))
    write_json({"dtype": merge["dtype"], "parity_dtype": merge["parity_dtype"],
                "parity_conversations": len(conversations),
                "max_abs_logit_difference": float(f"{difference:.3e}")}, "metrics/merge.json")
    write_json({"seconds": round(time.perf_counter() - start, 2)}, "metrics/timings/merge.json")
    log.info("merged as %s; max |logit difference| %.3e", merge["dtype"], difference)


if __name__ == "__main__":
    main()
