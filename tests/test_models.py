"""Starting models: bundled, tiny (seeded, real tokenizer) and hub snapshots, as plain transformers folders."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ladder.data.models import materialize

REPO = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_llama_is_seeded_loadable_and_has_the_real_chat_template(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    materialize("tiny:llama", tmp_path / "a", seed=3)
    materialize("tiny:llama", tmp_path / "b", seed=3)
    materialize("tiny:llama", tmp_path / "c", seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["model.safetensors"] != digest(tmp_path / "c")["model.safetensors"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    # every layer bitsandbytes quantizes is a multiple of 64 wide, k_proj and v_proj included
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (64, 64)
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 128)
    assert model.config.vocab_size == len(tokenizer) == 49152
    text = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer("hello", return_tensors="pt")
    assert model(**ids).logits.shape == (1, ids["input_ids"].shape[1], 49152)


def test_tiny_bert_uses_the_minilm_tokenizer(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    materialize("tiny:bert", tmp_path / "bert")
    model = AutoModel.from_pretrained(tmp_path / "bert")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bert")
    assert model.config.model_type == "bert" and model.config.vocab_size == len(tokenizer) == 30522
    out = model(**tokenizer(["a pair", "of texts"], padding=True, return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 64
    assert model.encoder.layer[0].intermediate.dense.weight.shape == (128, 64)


def test_bundled_minilm_is_a_plain_model_folder(tmp_path):
    from transformers import AutoModel

    materialize("bundled:all-minilm-l6-v2", tmp_path / "judge")
    model = AutoModel.from_pretrained(tmp_path / "judge")
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6


def test_bundled_smollm2_is_dequantized_to_plain_safetensors(tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    materialize("bundled:smollm2-135m-instruct", tmp_path / "base")
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert (tmp_path / "base" / "chat_template.jinja").is_file()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_unknown_specs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="tiny:gpt"):
        materialize("tiny:gpt", tmp_path / "x")
    with pytest.raises(ValueError, match="bundled:nope"):
        materialize("bundled:nope", tmp_path / "x")
    with pytest.raises(ValueError, match="revision"):
        materialize("org/model", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_fetch_model_from_a_pinned_hub_snapshot_offline(tmp_path, write_params):
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    snapshot = tmp_path / "hub" / "models--org--tiny-chat" / "snapshots" / commit
    materialize("tiny:llama", snapshot)
    (snapshot / "pytorch_model.bin").write_text("not copied: only safetensors weights are fetched")
    (tmp_path / "hub" / "models--org--tiny-chat" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny-chat" / "refs" / "main").write_text(commit)
    work = tmp_path / "work"
    work.mkdir()
    write_params(work / "params.yaml", {"fetch": {"base_model": "org/tiny-chat", "base_revision": commit}})
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "stages.fetch", "--model", "base"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = digest(work / "models" / "base")
    assert "pytorch_model.bin" not in got
    assert got["model.safetensors"] == digest(snapshot)["model.safetensors"]
    shutil.rmtree(tmp_path / "hub")
