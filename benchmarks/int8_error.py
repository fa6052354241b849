"""Benchmark: where LLM.int8's error on the merged chat model comes from.

Run by hand after `dvc repro quantize` (it reads models/merged and the eval conversations):
    python benchmarks/int8_error.py [--conversations 8]

Prints mean next-token KL and top-1 agreement against the float32 merged model for:
  bf16 / fp16 rounding     every weight rounded to 16 bits, computed in float32 (the storage cost alone)
  int8 threshold T         bitsandbytes LLM.int8 (weights and activations in 8 bits, activation columns above
                           T kept in 16 bits), for the WSDM threshold 6.0 and others
  weight-only int8         each Linear's rows rounded to 8 bits with their own absmax scale, activations left
                           in float32: what the weights alone cost
"""
from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--conversations", default=8, show_default=True)
@click.option("--thresholds", default="6.0,4.0,2.0,0.0", show_default=True)
def main(conversations: int, thresholds: str) -> None:
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from ladder import paths
    from ladder.training.chat import render
    from ladder.export.quantization import compute_in
    from ladder.export.fidelity import fidelity
    from ladder.io import require_outputs

    require_outputs("quantize", paths.MERGED, paths.SCORED_SFT)

    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    tokenizer = AutoTokenizer.from_pretrained(paths.MERGED)
    reference = AutoModelForCausalLM.from_pretrained(paths.MERGED, dtype=torch.float32).eval()
    rows = pl.read_parquet(paths.SCORED_SFT).filter(pl.col("split") == "eval").sort("id")
    batches = [tokenizer(render(m, tokenizer), return_tensors="pt", add_special_tokens=False, truncation=True,
                         max_length=256).input_ids for m in rows["messages"].to_list()[:conversations]]

    def report(label: str, model) -> None:
        figures = fidelity(reference, model, batches)
        print(f"{label:<24} KL {figures['kl_mean']:.5f}  top-1 {figures['top1_agreement']:.4f}", flush=True)

    for dtype in (torch.bfloat16, torch.float16):
        report(f"{str(dtype)[6:]} rounding", copy.deepcopy(reference).to(dtype).float())
    for threshold in (float(t) for t in thresholds.split(",")):
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold)
        model = AutoModelForCausalLM.from_pretrained(paths.MERGED, quantization_config=config,
                                                     dtype=torch.float16, device_map={"": "cpu"})
        report(f"int8 threshold {threshold}", compute_in(model, torch.float32).eval())
    rounded = copy.deepcopy(reference)
    for name, module in rounded.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            scale = module.weight.data.abs().amax(dim=1, keepdim=True) / 127
            module.weight.data = (module.weight.data / scale).round() * scale
    report("weight-only int8", rounded)


if __name__ == "__main__":
    main()
