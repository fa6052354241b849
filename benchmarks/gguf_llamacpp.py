"""Benchmark: the exported GGUF file read by llama.cpp itself, against transformers.

Needs llama-cpp-python (not a project dependency; it builds llama.cpp from source, 10-20 minutes on 2 cores):
    pip install llama-cpp-python
Run by hand after `dvc repro quantize` (or on any saved Llama-family model folder):
    python benchmarks/gguf_llamacpp.py [--model models/merged] [--types f32,f16] [--prompts 0] [--texts 305]

For each GGUF type it exports `--model` with ladder.export.gguf_export into a temporary folder and reports:
  greedy     on the eval prompts (data/clean/conversations.parquet, eval split, each cut before its last
             assistant turn and rendered with the model's saved chat template, as the inference stage does),
             llama.cpp's greedy tokens (it tokenizes the rendered text itself) against transformers' greedy
             tokens from the same GGUF file (transformers dequantizes it to float32): how many prompts give
             identical tokens, and the tokens compared
  tokenize   sample texts (message contents of those conversations) tokenized by llama.cpp and by the
             model's transformers tokenizer, with the file as exported and with tokenizer.ggml.pre removed
  warning    whether llama.cpp printed "GENERATION QUALITY WILL BE DEGRADED" loading each file
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ladder import paths  # noqa: E402

WARNING = "GENERATION QUALITY WILL BE DEGRADED"


def eval_prompts(path: str | Path) -> list[list[dict]]:
    """Eval conversations in id order, each cut before its last assistant turn (one with a user turn before)."""
    import polars as pl

    prompts = []
    for row in pl.read_parquet(path).filter(pl.col("split") == "eval").sort("id").iter_rows(named=True):
        last = max((i for i, m in enumerate(row["messages"]) if m["role"] == "assistant"), default=0)
        if last and any(m["role"] == "user" for m in row["messages"][:last]):
            prompts.append(row["messages"][:last])
    return prompts


def sample_texts(path: str | Path, n: int) -> list[str]:
    """The first `n` distinct non-empty message contents of the conversations, in id order."""
    import polars as pl

    texts: dict[str, None] = {}
    for row in pl.read_parquet(path).sort("id").iter_rows(named=True):
        for m in row["messages"]:
            if m["content"].strip():
                texts.setdefault(m["content"], None)
    return list(texts)[:n]


@contextlib.contextmanager
def captured_stderr(sink: Path):
    """llama.cpp logs from C to file descriptor 2; send it (and Python's stderr) to `sink` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(sink, "w") as f:
        os.dup2(f.fileno(), 2)
        try:
            with contextlib.redirect_stderr(f):
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def load_llama(path: Path, log: Path, **kwargs):
    """(llama.cpp model, whether loading it printed the degraded-quality warning)."""
    from llama_cpp import Llama

    with captured_stderr(log):
        llm = Llama(model_path=str(path), verbose=True, **kwargs)
    return llm, WARNING in log.read_text(errors="replace")


def without_pre(path: Path, target: Path) -> None:
    """A copy of the file without tokenizer.ggml.pre, made by the gguf package's own metadata tool."""
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(path), str(target),
                    "--remove-metadata", "tokenizer.ggml.pre", "--force"], check=True, capture_output=True)


def compare_tokenization(llm, tokenizer, texts: list[str]) -> dict:
    differ, tokens_llama, tokens_hf = 0, 0, 0
    for text in texts:
        ours = llm.tokenize(text.encode(), add_bos=False, special=False)
        theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
        differ += ours != theirs
        tokens_llama, tokens_hf = tokens_llama + len(ours), tokens_hf + len(theirs)
    return {"texts": len(texts), "tokenized_differently": differ, "tokens_llama_cpp": tokens_llama,
            "tokens_transformers": tokens_hf}


def llama_greedy(llm, prompt_ids: list[int], max_new: int, eos: int) -> list[int]:
    """Argmax of llama.cpp's own last-position logits (no sampler in between), until `eos` or `max_new`."""
    import numpy as np
    from llama_cpp import llama_get_logits_ith

    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    while len(out) < max_new:
        token = int(np.argmax(np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))))
        out.append(token)
        if token == eos:
            break
        llm.eval([token])
    return out


def hf_greedy(model, prompt_ids: list[int], max_new: int, eos: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=max_new, eos_token_id=eos,
                             pad_token_id=eos, attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long))
    return out[0, len(prompt_ids):].tolist()


def compare_greedy(llm, model, tokenizer, prompts: list[list[dict]], max_new: int) -> dict:
    from ladder.evaluation.generation import render_prompt

    eos = tokenizer.eos_token_id
    same_prompt_ids = identical = compared = 0
    first_difference = []
    for messages in prompts:
        text = render_prompt(messages, tokenizer)
        hf_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        cpp_ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        same_prompt_ids += cpp_ids == hf_ids
        theirs = hf_greedy(model, hf_ids, max_new, eos)
        ours = llama_greedy(llm, cpp_ids, max_new, eos)
        identical += ours == theirs
        compared += len(theirs)
        if ours != theirs:
            first_difference.append(next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                                         min(len(ours), len(theirs))))
    return {"prompts": len(prompts), "prompt_tokens_identical": same_prompt_ids, "greedy_identical": identical,
            "transformers_tokens": compared, "max_new_tokens": max_new,
            "first_difference_at": first_difference}


@click.command(help=__doc__)
@click.option("--model", "model_dir", default=str(paths.MERGED), show_default=True,
              type=click.Path(exists=True, file_okay=False))
@click.option("--conversations", default=str(paths.CONVERSATIONS), show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--types", default="f32,f16", show_default=True, help="GGUF types to export and compare")
@click.option("--prompts", "n_prompts", default=0, show_default=True, help="eval prompts to use (0: all)")
@click.option("--max-new-tokens", default=48, show_default=True, help="inference.sampling.max_new_tokens")
@click.option("--texts", "n_texts", default=305, show_default=True, help="sample texts for tokenization")
@click.option("--threads", default=2, show_default=True)
def main(model_dir: str, conversations: str, types: str, n_prompts: int, max_new_tokens: int, n_texts: int,
         threads: int) -> None:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise click.ClickException("llama-cpp-python is not installed: pip install llama-cpp-python")
    import torch
    from transformers import AutoTokenizer

    from ladder.export.gguf_export import export_gguf
    from ladder.export.quantization import load_quantized

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = eval_prompts(conversations)
    prompts = prompts[:n_prompts] if n_prompts else prompts
    texts = sample_texts(conversations, n_texts)
    report = {"model": model_dir, "eval_prompts": len(prompts), "sample_texts": len(texts), "types": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gguf").mkdir()
        for gguf_type in [t.strip() for t in types.split(",") if t.strip()]:
            path = tmp / "gguf" / f"model-{gguf_type}.gguf"
            export_gguf(model_dir, path, gguf_type)
            without_pre(path, tmp / f"nopre-{gguf_type}.gguf")
            entry = {}
            for label, file in (("with_pre", path), ("without_pre", tmp / f"nopre-{gguf_type}.gguf")):
                vocab, warned = load_llama(file, tmp / "llama.log", vocab_only=True)
                entry[label] = {"degraded_warning": warned, **compare_tokenization(vocab, tokenizer, texts)}
                del vocab
            llm, _ = load_llama(path, tmp / "llama.log", n_ctx=4096, n_threads=threads, n_batch=512, seed=0)
            model, _ = load_quantized(tmp, f"gguf-{gguf_type}", dtype="float32")
            entry["greedy"] = compare_greedy(llm, model, tokenizer, prompts, max_new_tokens)
            del llm, model
            report["types"][gguf_type] = entry
            click.echo(json.dumps({gguf_type: entry}), err=True)
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
