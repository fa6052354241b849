"""quantize: the merged chat model in smaller formats, each measured against the merged model.

Reads   models/merged, data/scored/sft.parquet (eval conversations for the fidelity figures), params
        `quantize` (formats, gguf_types, dtype, nf4_compute_dtype, eval_conversations, max_length,
        generation_tokens).
Writes  models/quantized/{int8,nf4}/ (bitsandbytes; `from_pretrained` loads them back quantized),
        models/quantized/gguf/model-<type>.gguf (llama.cpp / Ollama; tokenizer and chat template inside),
        metrics/quantize.json (per format: mean next-token KL divergence from the merged model, top-1
        agreement, perplexity and its change, size on disk and its ratio to 16 bits),
        metrics/timings/quantize.json (seconds to quantize and to load, generation tokens/s).

Weights bitsandbytes leaves unquantized (embeddings, norms, lm_head) are stored in `quantize.dtype` (16-bit),
so the size ratio is reported twice: for the whole file, and for the quantized layers alone.
Any format is loaded back by name with ladder.export.quantization.load_quantized (int8, nf4, gguf-<type>).
A model with a layer bitsandbytes' CPU kernels cannot take (nf4: in_features not a multiple of 64 or
out_features not a multiple of 32) is refused before anything is written, naming the layer.

Usage:
    python -m stages.quantize
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ladder import paths
from ladder.errors import InputError
from ladder.export.fidelity import fidelity, generation_speed, sizes
from ladder.export.quantization import quantize_bnb
from ladder.stage import stage
from ladder.training.trainer import stage_hardware

log = logging.getLogger("ladder.quantize")
MERGED, OUT = Path(paths.MERGED), Path(paths.QUANTIZED)


def check_shapes(merged: Path, formats: list[str]) -> None:
    """Stop, naming the first offending layer, when a bitsandbytes format cannot take the merged model's layer
    shapes on every CPU (ladder.export.quantization.bnb_shape_problems says why), before any work is done."""
    from ladder.export.quantization import BNB_METHODS, bnb_shape_problems, model_skeleton

    methods = [fmt for fmt in formats if fmt in BNB_METHODS]
    if not methods:
        return
    skeleton = model_skeleton(merged)
    for method in methods:
        problems = bnb_shape_problems(skeleton, method)
        if problems:
            more = f" (and {len(problems) - 1} more layers)" if len(problems) > 1 else ""
            raise InputError(f"{merged} cannot be quantized to {method}: {problems[0]}{more}")


@stage("quantize", hardware=stage_hardware)
def main(params: dict, hw: dict) -> None:
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladder.training.chat import render
    from ladder.export.gguf_export import export_gguf
    from ladder.io import atomic_path, read_parquet, write_json
    from ladder.data.records import require_rows
    from ladder.export.quantization import format_names, load_quantized, weight_files
    from ladder.training.trainer import compute_dtype, device_name

    # bitsandbytes logs "inputs will be cast to float16" on every int8 matmul call; that is how LLM.int8 works
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    q = params["quantize"]
    check_shapes(MERGED, q["formats"])
    if "gguf" in q["formats"]:  # a tokenizer llama.cpp would split wrongly is refused before any work
        from transformers import AutoTokenizer as Tokenizers

        from ladder.export.gguf_export import pre_tokenizer_type
        try:
            pre_tokenizer_type(Tokenizers.from_pretrained(MERGED), str(MERGED))
        except ValueError as error:
            raise InputError(str(error)) from None
    scored = read_parquet(paths.SCORED_SFT)
    require_rows(scored, paths.SCORED_SFT, "quantize's fidelity check", {"eval": 1})
    eval_rows = scored.filter(pl.col("split") == "eval").sort("id")
    compute = compute_dtype(hw["bf16"])
    log.info("fidelity computed in %s", compute)
    timings: dict[str, dict] = {"quantize_seconds": {}, "load_seconds": {}, "generation_tokens_per_s": {}}
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for fmt in q["formats"]:
            start = time.perf_counter()
            if fmt == "gguf":
                (tmp / "gguf").mkdir()
                for gguf_type in q["gguf_types"]:
                    export_gguf(MERGED, tmp / "gguf" / f"model-{gguf_type}.gguf", gguf_type)
            else:
                quantize_bnb(MERGED, tmp / fmt, fmt, q["dtype"], q["nf4_compute_dtype"], hw["cuda"])
            timings["quantize_seconds"][fmt] = round(time.perf_counter() - start, 2)
        # measured as written, from the folder that becomes models/quantized with the stage's other outputs
        tokenizer = AutoTokenizer.from_pretrained(MERGED)
        reference = AutoModelForCausalLM.from_pretrained(MERGED, dtype=getattr(torch, compute)).to(
            device_name(hw["cuda"])).eval()
        numels = {k: v.numel() for k, v in reference.state_dict().items()}
        size_16bit = 2 * sum(p.numel() for p in reference.parameters())  # tied weights counted once
        texts = [render(m, tokenizer) for m in eval_rows["messages"].to_list()[:q["eval_conversations"]]]
        batches = [tokenizer(t, return_tensors="pt", add_special_tokens=False, truncation=True,
                             max_length=q["max_length"]).input_ids for t in texts]
        prompt = render(eval_rows["messages"][0][:1], tokenizer, generation_prompt=True)
        speed = timings["generation_tokens_per_s"]
        speed["merged"] = round(generation_speed(reference, tokenizer, prompt, q["generation_tokens"]), 2)
        results = {}
        for name in format_names(q["formats"], q["gguf_types"]):
            start = time.perf_counter()
            model, _ = load_quantized(tmp, name, dtype=compute, cuda=hw["cuda"])
            load_seconds = time.perf_counter() - start
            figures = fidelity(reference, model, batches)
            size = sizes(weight_files(tmp, name), numels)
            results[name] = {
                **{k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()},
                "size_mb": round(size["bytes"] / 2**20, 2), "size_ratio_16bit": round(size["bytes"] / size_16bit, 4),
                "quantized_layers_ratio_16bit": round(size["quantized_bytes"] / (2 * size["quantized_numel"]), 4)
                if size["quantized_numel"] else None}
            timings["load_seconds"][name] = round(load_seconds, 2)
            speed[name] = round(generation_speed(model, tokenizer, prompt, q["generation_tokens"]), 2)
            log.info("%s: %s", name, results[name])
            del model
    write_json({"reference": {"size_16bit_mb": round(size_16bit / 2**20, 2), "eval_conversations": len(batches)},
                "formats": results}, paths.metrics_file("quantize"))
    write_json(timings, paths.timings_file("quantize"))


if __name__ == "__main__":
    main()
