"""The pipeline's CUDA paths, on tiny models with the real bundled tokenizers: bf16 and the attention kernel,
the paged and 8-bit bitsandbytes optimizers, the int8 / nf4 judge trained through LoRA, nf4 with a bf16
compute dtype, the bfloat16 merge, a resumed SFT run, vLLM generation.

Every test here is marked `gpu` and skipped where torch sees no CUDA device, so the ordinary test run (and
CI, which has no GPU) collects and skips them. On a GPU machine: python -m pytest -m gpu tests/gpu
"""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
# Layer sizes in multiples of 64 (the house rule for tiny models); two heads of 32.
SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (tests/gpu); skipped without one, never run by CI")


def pytest_collection_modifyitems(config, items):
    ours = [item for item in items if HERE in item.path.parents]
    if not ours:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in ours:
        item.add_marker(skip)


def save_tiny(kind: str, folder: Path) -> Path:
    """A seeded tiny model with the real bundled tokenizer, saved as a plain transformers folder (fp32)."""
    from ladder.data.models import tiny_model

    overrides = {**SIZES, "num_key_value_heads": 2} if kind == "llama" else SIZES
    model, tokenizer = tiny_model(kind, seed=0, **overrides)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny("bert", tmp_path_factory.mktemp("tiny") / "bert")
