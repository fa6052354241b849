"""Write a transformers Llama-family model folder as a GGUF file for llama.cpp and Ollama.

The gguf package (llama.cpp's own Python library) does the file format, the tensor names and the
quantization; this module holds the few conversion facts llama.cpp's converter applies to Llama models:
the rotary permutation of q/k, 1-D tensors kept in f32, a row length that does not divide into blocks
falling back to f16, and the tokenizer (byte-level BPE, with its pre-tokenizer type) and chat template
written as metadata.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ladder.params import GGUF_TYPES as TYPES

log = logging.getLogger("ladder.gguf")
# transformers architectures llama.cpp converts as its `llama` architecture
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}

# llama.cpp cannot run a tokenizer.json's pre-tokenizer; it reimplements each known one and picks it by the
# `tokenizer.ggml.pre` name. Its converter (convert_hf_to_gguf.py, get_vocab_base_pre) tells which one a
# tokenizer uses by the sha256 of str(tokenizer.encode(text)) for this text, whose spaces, digit runs, emoji
# joiners, scripts and apostrophe forms are where pre-tokenizers differ. It must stay identical to
# llama.cpp's, character for character, or no hash matches.
PRE_TOKENIZER_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n"
    "\U0001F680 (normal) \U0001F636\u200D\U0001F32B\uFE0F (multiple emojis concatenated) \u2705 "
    "\U0001F999\U0001F999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17B6\u1793\u17CB\u178F\u17C2\u1796\u17B7\u179F\u17C1\u179F\u17A2\u17B6\u1785\U0001F601 "
    "?\u6211\u60F3\u5728apple\u5DE5\u4F5C1314151\u5929\uFF5E ------======= "
    "\u043D\u0435\u0449\u043E \u043D\u0430 \u0411\u044A\u043B\u0433\u0430\u0440\u0441\u043A\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# check-text hash -> llama.cpp pre-tokenizer name, from llama.cpp's table; the model named is the one the
# hash was taken from there. The first two are verified here: SmolLM2's from the bundled tokenizer (the
# test suite), Mistral-Nemo's from mistral-common's copy of its tekken tokenizer with <s> prepended, as its
# transformers tokenizer encodes.
PRE_TOKENIZER_TYPES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM-135M, SmolLM2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral-Nemo-Base-2407
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",  # pixtral-12b (tekken, no <s>)
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5-7B
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding-0.6B
}


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


def pre_tokenizer_hash(tokenizer) -> str:
    """llama.cpp's fingerprint of how `tokenizer` splits text: sha256 of the printed id list of the check text,
    encoded with the tokenizer's own defaults (special tokens such as a leading <s> included)."""
    import hashlib

    return hashlib.sha256(str(list(tokenizer.encode(PRE_TOKENIZER_CHECK_TEXT))).encode()).hexdigest()


def pre_tokenizer_type(tokenizer, name: str = "this tokenizer") -> str:
    """The `tokenizer.ggml.pre` value llama.cpp's converter would write, or an error naming the tokenizer and
    its hash: without the right value llama.cpp splits text by other rules than the model was trained on."""
    digest = pre_tokenizer_hash(tokenizer)
    if digest not in PRE_TOKENIZER_TYPES:
        raise ValueError(f"GGUF export: the pre-tokenizer of {name} is not one llama.cpp is known to implement "
                         f"(check-text hash {digest}); known: {', '.join(sorted(set(PRE_TOKENIZER_TYPES.values())))}")
    return PRE_TOKENIZER_TYPES[digest]


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
    tokens, types = vocabulary(tokenizer, model_dir, vocab_size)
    pre = pre_tokenizer_type(tokenizer, f"the tokenizer in {model_dir}")  # before the file is begun

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

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
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
