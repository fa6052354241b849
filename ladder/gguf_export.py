"""Write a transformers Llama-family model folder as a GGUF file for llama.cpp and Ollama.

The gguf package (llama.cpp's own Python library) does the file format, the tensor names and the
quantization; this module holds the few conversion facts llama.cpp's converter applies to Llama models:
the rotary permutation of q/k, 1-D tensors kept in f32, a row length that does not divide into blocks
falling back to f16, and the tokenizer (byte-level BPE) and chat template written as metadata.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("ladder.gguf")
# transformers architectures llama.cpp converts as its `llama` architecture
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}
TYPES = ("f32", "f16", "bf16", "q8_0")


def _types(name: str):
    from gguf import GGMLQuantizationType as Q, LlamaFileType as F

    table = {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "bf16": (Q.BF16, F.MOSTLY_BF16),
             "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0)}
    if name not in table:
        raise ValueError(f"GGUF type must be one of {', '.join(TYPES)}; got {name!r}")
    return table[name]


def permute_rotary(weights, n_head: int):
    """llama.cpp's order for q/k rows: HF keeps the two rotary halves of each head apart, llama.cpp interleaves
    them (transformers undoes this when it reads a GGUF)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def check_supported(config) -> str:
    """The GGUF architecture for a transformers config, or a clear error naming what is not supported."""
    architecture = (config.architectures or ["<none>"])[0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {architecture}")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"GGUF export supports plain RoPE only; this model has rope_type {rope['rope_type']!r}")
    return ARCHITECTURES[architecture]


def tensor_data(name: str, tensor, config, qtype):
    """(numpy data, GGML type) for one tensor: q/k permuted, 1-D kept f32, rows that do not fill whole
    quantization blocks stored f16."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, quants

    data = tensor.float().numpy()
    if name.endswith("q_proj.weight"):
        data = permute_rotary(data, config.num_attention_heads)
    elif name.endswith("k_proj.weight"):
        data = permute_rotary(data, config.num_key_value_heads or config.num_attention_heads)
    if data.ndim == 1 or qtype == Q.F32:
        return data.astype(np.float32), Q.F32
    block = GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        qtype = Q.F16
    if qtype == Q.F16:
        return data.astype(np.float16), Q.F16
    return quants.quantize(data, qtype), qtype


def vocabulary(tokenizer, model_dir: Path, vocab_size: int):
    """(tokens, token types) in id order, padded with unused tokens to the embedding's row count."""
    from gguf import TokenType

    if json.loads((model_dir / "tokenizer.json").read_text())["model"]["type"] != "BPE":
        raise ValueError("GGUF export supports byte-level BPE tokenizers (tokenizer.json model type BPE) only")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL if i not in added else
                         TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
    return tokens, types


def export_gguf(model_dir: str | Path, target: str | Path, gguf_type: str, name: str = "ladder chat model") -> dict:
    """Write `model_dir` (a saved Llama-family model with its tokenizer) to the GGUF file `target`.

    Returns a count of tensors per GGML type, so a caller can report how many fell back to f16."""
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    model_dir = Path(model_dir)
    qtype, file_type = _types(gguf_type)
    config = AutoConfig.from_pretrained(model_dir)
    arch = check_supported(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    state = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(shard))
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    vocab_size = state["model.embed_tokens.weight"].shape[0]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    writer = gguf.GGUFWriter(str(target), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types = vocabulary(tokenizer, model_dir, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    special.chat_template = tokenizer.chat_template  # saved as chat_template.jinja, which SpecialVocab skips
    special.add_to_gguf(writer, quiet=True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    counts: dict[str, int] = {}
    for hf_name in sorted(state):
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"GGUF export: no llama.cpp name for tensor {hf_name!r}")
        data, used = tensor_data(hf_name, state[hf_name], config, qtype)
        counts[used.name.lower()] = counts.get(used.name.lower(), 0) + 1
        writer.add_tensor(gguf_name, data, raw_dtype=used)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    log.info("wrote %s (%s): tensors per type %s", target, gguf_type, counts)
    return counts
