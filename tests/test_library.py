"""The helpers the stages share instead of each keeping a copy: batches in length order, the pad-token fallback,
the required-column check, LoRA settings from params, and the dtype and device chosen from the hardware."""
from __future__ import annotations

import polars as pl
import pytest

from ladder.batching import length_sorted_batches, with_pad_token
from ladder.data.records import require_columns
from ladder.training.trainer import compute_dtype, device_name, lora_config, torch_dtype


def test_length_sorted_batches_cover_every_index_once_shortest_first():
    lengths = [5, 1, 3, 3, 9, 1, 2]
    batches = length_sorted_batches(lengths, 3)
    assert batches == [[1, 5, 6], [2, 3, 0], [4]]  # equal lengths keep their input order
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert length_sorted_batches([], 4) == [] and length_sorted_batches([2, 1], 8) == [[1, 0]]


class Tokenizer:
    def __init__(self, pad, eos="</s>"):
        self.pad_token, self.eos_token = pad, eos


def test_the_pad_token_falls_back_to_eos_only_when_missing():
    assert with_pad_token(Tokenizer(None)).pad_token == "</s>"
    assert with_pad_token(Tokenizer("<pad>")).pad_token == "<pad>"


def test_required_columns_are_named_with_the_file():
    df = pl.DataFrame({"id": ["a"], "split": ["train"]})
    require_columns(df, ("id", "split"), "x.parquet")
    with pytest.raises(ValueError, match=r"^x\.parquet: column 'messages' is missing$"):
        require_columns(df, ("id", "messages"), "x.parquet")
    with pytest.raises(ValueError, match=r"^columns 'label', 'messages' are missing$"):
        require_columns(df, ("label", "messages", "split"))


def test_lora_config_passes_each_setting_as_the_stages_did():
    from peft import LoraConfig

    lora = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    assert lora_config(lora, "CAUSAL_LM") == LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05,
                                                        target_modules=["q_proj", "v_proj"], bias="none")
    assert lora_config(lora | {"bias": "lora_only"}, "SEQ_CLS").bias == "lora_only"
    judge = lora_config(lora, layers_to_transform=[4, 5])
    assert judge.task_type is None and judge.layers_to_transform == [4, 5] and judge.lora_alpha == 16


def test_dtype_and_device_follow_the_hardware():
    import torch

    assert (compute_dtype(True), compute_dtype(False)) == ("bfloat16", "float32")
    assert (torch_dtype(True), torch_dtype(False)) == (torch.bfloat16, torch.float32)
    assert (device_name(True), device_name(False)) == ("cuda", "cpu")
