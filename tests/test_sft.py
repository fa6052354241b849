"""SFT on a tiny model: assistant-only labels with EOS, one template for training and generation,
LoRA weights move and frozen ones do not, and a killed run resumes to the same adapter."""
from __future__ import annotations

import pytest
import torch

from ladder.training.chat import IGNORE, checked_collator, render, tokenize_for_training, use_template
from ladder.evaluation.generation import render_prompt
from ladder.data.models import load_bundled_chat_tokenizer, materialize
from ladder.training.trainer import StopAfter, hardware
from ladder.training.supervised import train

CONVERSATIONS = [
    [{"role": "system", "content": "You are Aria, a librarian."}, {"role": "assistant", "content": "Welcome!"},
     {"role": "user", "content": f"Tell me about book {i}."},
     {"role": "assistant", "content": f"Book {i} is about dragons and maps."}]
    for i in range(12)]


def params(**trainer):
    return {"chat_template": "base", "max_length": 64, "packing": False, "learn_greeting": True, "seed": 0,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "trainer": {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 5e-3,
                        "lr_scheduler_type": "constant", "activation_checkpointing": False} | trainer}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "tiny"
    materialize("tiny:llama", folder, seed=0)
    return folder


@pytest.mark.parametrize("template", ["base", "chatml", "mistral-nemo"])
def test_labels_cover_assistant_turns_and_their_end_token_only(template):
    tokenizer = use_template(load_bundled_chat_tokenizer(), template)
    out = tokenize_for_training(CONVERSATIONS[3], tokenizer, 512)
    learned = tokenizer.decode([t for t in out["labels"] if t != IGNORE])
    assert "Welcome!" in learned and "Book 3 is about dragons and maps." in learned
    assert learned.count(tokenizer.eos_token) == 2  # each assistant turn ends with the end-of-turn token
    assert "librarian" not in learned and "Tell me about" not in learned and "user" not in learned
    assert [t for t, l in zip(out["input_ids"], out["labels"]) if l != IGNORE] == \
        [l for l in out["labels"] if l != IGNORE]


def test_long_conversations_keep_their_end_and_empty_ones_are_refused():
    tokenizer = load_bundled_chat_tokenizer()
    long = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "The end."}]
    out = tokenize_for_training(long, tokenizer, 16)
    assert len(out["input_ids"]) == 16 and "The end." in tokenizer.decode(out["input_ids"])
    cut = [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "word " * 300}]
    assert tokenize_for_training(cut, tokenizer, 16) is None  # the only reply fell off the front


def test_a_batch_with_nothing_to_learn_is_an_error():
    collate = checked_collator(lambda rows: {"labels": torch.tensor([[IGNORE, IGNORE]])})
    with pytest.raises(ValueError, match="every label masked"):
        collate([{}])


def test_unknown_template_is_named():
    with pytest.raises(ValueError, match="nope.*chatml.*mistral"):
        use_template(load_bundled_chat_tokenizer(), "nope")


def test_training_moves_lora_weights_only_and_saves_the_template(base, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.chdir(tmp_path)
    data = {"train": CONVERSATIONS[:8], "eval": CONVERSATIONS[8:]}
    trainer, figures, timings = train(params(), data, base, hardware(), checkpoints=tmp_path / "ck")
    model = trainer.model
    fresh = AutoModelForCausalLM.from_pretrained(base).state_dict()
    for name, param in model.named_parameters():
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" in name:
            assert param.requires_grad
        else:
            assert not param.requires_grad and torch.equal(param.detach(), fresh[plain]), name
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it trained
    assert figures["eval_loss"] < figures["eval_loss_base"] and figures["steps"] == 4
    assert timings["train_tokens_per_second"] > 0
    model.save_pretrained(tmp_path / "sft")
    trainer.processing_class.save_pretrained(tmp_path / "sft")
    saved = AutoTokenizer.from_pretrained(tmp_path / "sft")
    prompt = CONVERSATIONS[0][:3]
    trained_text = render(CONVERSATIONS[0], trainer.processing_class)
    assert trained_text.startswith(render_prompt(prompt, saved))  # generation sees what training saw


def test_a_killed_run_resumes_to_the_same_adapter(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"train": CONVERSATIONS[:8], "eval": CONVERSATIONS[8:10]}
    checkpointed = params(save_strategy="steps", save_steps=1)
    whole, _, _ = train(checkpointed, data, base, hardware(), checkpoints=tmp_path / "a")
    train(checkpointed, data, base, hardware(), checkpoints=tmp_path / "b", callbacks=[StopAfter(2)])
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    resumed, figures, _ = train(checkpointed, data, base, hardware(), checkpoints=tmp_path / "b")
    assert figures["steps"] == 4
    a = {n: p for n, p in whole.model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in resumed.model.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys() and all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    # Started again once finished, it trains the same steps again rather than one step past the end.
    again, figures, _ = train(checkpointed, data, base, hardware(), checkpoints=tmp_path / "b")
    assert figures["steps"] == 4
    c = {n: p for n, p in again.model.named_parameters() if "lora_" in n}
    assert all(torch.allclose(a[n], c[n], atol=1e-6) for n in a)
    # Different inputs never resume from these checkpoints.
    other = {"train": CONVERSATIONS[2:10], "eval": data["eval"]}
    _, figures, _ = train(checkpointed, other, base, hardware(), checkpoints=tmp_path / "b", callbacks=[StopAfter(1)])
    assert figures["steps"] == 1


def test_saved_adapter_config_is_byte_stable(base, tmp_path):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ladder.training.trainer import save_adapter
    modules = ["v_proj", "q_proj", "o_proj", "k_proj", "up_proj", "gate_proj", "down_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=modules))
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(modules)


def test_an_adapter_saved_from_gathered_weights_is_the_adapter(base, tmp_path):
    """FSDP and ZeRO-3 hand save_adapter the whole model's gathered state dict: it must pick out the same
    LoRA tensors, under the same names, as saving the model directly."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from ladder.training.trainer import save_adapter
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False))
    save_adapter(model, tmp_path / "direct")
    gathered = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():  # what this process holds no longer matters
            p.zero_()
    save_adapter(model, tmp_path / "gathered", gathered)
    direct, saved = (load_file(tmp_path / f / "adapter_model.safetensors") for f in ("direct", "gathered"))
    assert direct.keys() == saved.keys() and len(direct) == 8
    assert all(torch.equal(direct[k], saved[k]) for k in direct) and any(v.abs().sum() > 0 for v in saved.values())


def test_token_count_separates_real_tokens_from_padding():
    from ladder.training.trainer import TokenCount, token_timings

    def collate(rows):
        width = max(len(r) for r in rows)
        return {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}

    counter = TokenCount(collate)
    counter([[5, 6, 7], [8]])
    counter([[1, 2]])
    assert (counter.real, counter.padded) == (6, 8)
    assert token_timings(counter, 2.0, processes=2) == {"train_tokens": 12, "train_tokens_per_second": 6.0,
                                                         "train_padding_share": 0.25}
    padding_free = TokenCount(lambda rows: {"input_ids": torch.tensor([sum(rows, [])])})
    padding_free([[1, 2], [3]])
    assert (padding_free.real, padding_free.padded) == (3, 3)


def test_a_packed_row_attends_within_each_conversation_only(base):
    """Packed and padding-free batches rest on transformers reading position ids as sequence starts (sdpa
    included; only without a KV cache, as in training, where TRL turns the cache off): the logits of two
    sequences in one row are those of each alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa").eval()
    first, second = torch.randint(10, 500, (1, 5)), torch.randint(10, 500, (1, 7))
    with torch.no_grad():
        alone = torch.cat([model(input_ids=first).logits, model(input_ids=second).logits], dim=1)
        packed = model(input_ids=torch.cat([first, second], dim=1),
                       position_ids=torch.cat([torch.arange(5), torch.arange(7)])[None], use_cache=False).logits
        unmarked = model(input_ids=torch.cat([first, second], dim=1), use_cache=False).logits
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(unmarked[:, 5:], alone[:, 5:], atol=1e-3)  # not vacuous: one sequence sees the other


def test_packing_trains_on_padding_free_rows(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"train": CONVERSATIONS[:8], "eval": CONVERSATIONS[8:]}
    trainer, figures, timings = train({**params(), "packing": True}, data, base, hardware(), checkpoints=tmp_path / "ck")
    assert trainer.args.packing and figures["steps"] == 4
    assert figures["eval_loss"] < figures["eval_loss_base"]
    assert timings["train_padding_share"] == 0.0 and timings["train_tokens"] > 0  # one row a batch, no padding
