"""GGUF export: the file names the pre-tokenizer llama.cpp must use, decided as llama.cpp's converter decides it."""
from __future__ import annotations

import pytest

from ladder.export.gguf_export import (PRE_TOKENIZER_CHECK_TEXT, PRE_TOKENIZER_TYPES, export_gguf, pre_tokenizer_hash,
                                pre_tokenizer_type)
from ladder.data.models import load_bundled_chat_tokenizer, tiny_model

# every layer size a multiple of 64, so each works on every CPU kernel path
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 2}
# llama.cpp's table entries (convert_hf_to_gguf.py) for the two chat tokenizers the recipes use
SMOLLM_HASH = "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
TEKKEN_HASH = "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e"


def saved_tiny_model(folder, tokenizer=None):
    model, tokenizer = tiny_model("llama", seed=0, tokenizer=tokenizer, **SHAPE)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def gguf_string(path, key):
    from gguf import GGUFReader

    field = GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


def test_bundled_smollm2_tokenizer_hashes_to_llama_cpps_smollm_entry():
    tokenizer = load_bundled_chat_tokenizer()
    assert pre_tokenizer_hash(tokenizer) == SMOLLM_HASH
    assert pre_tokenizer_type(tokenizer) == "smollm"
    # the check text is the converter's: its parts that tell pre-tokenizers apart are all there
    assert len(PRE_TOKENIZER_CHECK_TEXT) == 350 and "\u200d" in PRE_TOKENIZER_CHECK_TEXT
    assert PRE_TOKENIZER_CHECK_TEXT.endswith("We'Ve a'lL")


def test_mistral_nemo_tekken_tokenizer_hashes_to_tekken():
    """Mistral-Nemo's tokenizer as mistral-common ships it (tekken_240718), encoding as its transformers
    tokenizer does: <s> first, no </s>."""
    from pathlib import Path

    tekken = pytest.importorskip("mistral_common.tokens.tokenizers.tekken")
    import mistral_common

    tekkenizer = tekken.Tekkenizer.from_file(Path(mistral_common.__file__).parent / "data" / "tekken_240718.json")

    class AsTransformersEncodes:
        def encode(self, text):
            return tekkenizer.encode(text, bos=True, eos=False)

    assert pre_tokenizer_hash(AsTransformersEncodes()) == TEKKEN_HASH
    assert pre_tokenizer_type(AsTransformersEncodes()) == "tekken"
    assert PRE_TOKENIZER_TYPES[TEKKEN_HASH] == "tekken"


def test_exported_file_carries_the_pre_tokenizer_type(tmp_path):
    folder = saved_tiny_model(tmp_path / "model")
    export_gguf(folder, tmp_path / "m.gguf", "f16")
    assert gguf_string(tmp_path / "m.gguf", "tokenizer.ggml.pre") == "smollm"
    assert gguf_string(tmp_path / "m.gguf", "tokenizer.ggml.model") == "gpt2"


def test_tokenizer_whose_pre_tokenizer_cannot_be_told_is_refused_before_writing(tmp_path):
    from tokenizers import pre_tokenizers

    tokenizer = load_bundled_chat_tokenizer()
    # splitting on whitespace alone, not GPT-2's regex: a tokenizer llama.cpp has no rules for
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    digest = pre_tokenizer_hash(tokenizer)
    assert digest not in PRE_TOKENIZER_TYPES
    folder = saved_tiny_model(tmp_path / "model", tokenizer)
    with pytest.raises(ValueError, match=f"tokenizer in {folder}.*{digest}"):
        export_gguf(folder, tmp_path / "m.gguf", "f16")
    assert not (tmp_path / "m.gguf").exists()
