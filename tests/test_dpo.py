"""Preference tuning on a tiny model: the table of methods builds the trainer and config each declares, the reference
is the SFT model, prompts fit, weights move as they should, and each method reports the figures it declares."""
from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from ladder.errors import InputError
from ladder.training.chat import fit_prompt, render
from ladder.data.models import load_bundled_chat_tokenizer, materialize
from ladder.params import PREFERENCE_METHODS
from ladder.training.merging import sft_merged
from ladder.training.preference import METHODS, config_for, eval_figures, headline, logged_params, trainer_for, unpair
from ladder.training.trainer import causal_lm_settings, hardware, lora_config

PROMPT = [{"role": "system", "content": "You are Aria."}, {"role": "assistant", "content": "Welcome!"},
          {"role": "user", "content": "Tell me about the dragon."}]


def pair_rows(n):
    return [{"prompt": PROMPT[:2] + [{"role": "user", "content": f"Tell me about dragon {i}."}],
             "chosen": [{"role": "assistant", "content": f"*smiles* Dragon {i} guards the maps."}],
             "rejected": [{"role": "assistant", "content": f"ok {i}"}]} for i in range(n)]


def pairs(n):
    return Dataset.from_list(pair_rows(n))


def params(method="dpo", **extra):
    return {"method": method, "loss_type": "sigmoid", "beta": 0.1, "simpo_gamma": 0.5, "max_length": 96,
            "kto": {"loss_type": "kto", "desirable_weight": 1.0, "undesirable_weight": 1.0},
            "seed": 0, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "trainer": {"max_steps": 3, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
                        "learning_rate": 1e-2, "activation_checkpointing": False}} | extra


def lora():
    """The adapter params() describes, built as the stage builds it."""
    return lora_config(params()["lora"], "CAUSAL_LM")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny base and an SFT adapter with non-zero (random) LoRA weights, as PEFT's merge tests do."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("models")
    materialize("tiny:llama", root / "base", seed=0)
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    sft = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                         LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False))
    sft.save_pretrained(root / "sft")
    return root


def logits(model, tokenizer):
    ids = tokenizer(render(PROMPT, tokenizer, generation_prompt=True), return_tensors="pt")
    with torch.inference_mode():
        return model(**ids).logits


def test_fit_prompt_drops_early_turns_and_keeps_the_system_message():
    tokenizer = load_bundled_chat_tokenizer()
    long = [PROMPT[0]] + [{"role": r, "content": f"turn {i} " * 10} for i, r in
                          zip(range(8), ["assistant", "user"] * 4)]
    fitted = fit_prompt(long, tokenizer, 80)
    assert fitted[0] == PROMPT[0] and fitted[-1] == long[-1] and len(fitted) < len(long)
    assert len(tokenizer(render(fitted, tokenizer, True), add_special_tokens=False)["input_ids"]) <= 80
    huge = [{"role": "user", "content": "word " * 500 + "the question?"}]
    cut = fit_prompt(huge, tokenizer, 40)
    assert cut[-1]["content"].endswith("the question?")
    assert len(tokenizer(render(cut, tokenizer, True), add_special_tokens=False)["input_ids"]) <= 40


def test_the_reference_is_the_sft_model_not_the_base(models, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)
    tokenizer = load_bundled_chat_tokenizer()
    hw = hardware()
    start = sft_merged(models / "base", models / "sft", **causal_lm_settings(hw))
    sft_logits = logits(start, tokenizer)
    base_logits = logits(AutoModelForCausalLM.from_pretrained(models / "base"), tokenizer)
    assert not torch.allclose(sft_logits, base_logits, atol=1e-4)  # the SFT adapter does change the model
    trainer = trainer_for(params(), start, tokenizer, {"train": pairs(4), "eval": pairs(2)}, hw, lora())
    assert getattr(trainer, "ref_model", None) is None  # so TRL's reference is the policy with its adapter off
    trainer.train()
    with trainer.model.disable_adapter():
        reference = logits(trainer.model, tokenizer)
    assert torch.allclose(reference, sft_logits, atol=1e-5)
    assert not torch.allclose(logits(trainer.model, tokenizer), sft_logits, atol=1e-5)  # the new adapter moved


def test_dpo_moves_only_the_new_adapter_and_reports_reward_accuracy(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer = load_bundled_chat_tokenizer()
    hw = hardware()
    trainer = trainer_for(params(), sft_merged(models / "base", models / "sft", **causal_lm_settings(hw)), tokenizer,
                          {"train": pairs(4), "eval": pairs(2)}, hw, lora())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert moved and all("lora_" in n for n in moved)  # the SFT-merged weights stay as they were
    assert any("lora_B" in n for n in moved)
    figures = eval_figures("dpo", trainer.evaluate())
    assert {"eval_loss", "reward_accuracy", "reward_margin"} <= set(figures)
    assert 0.0 <= figures["reward_accuracy"] <= 1.0


@pytest.mark.parametrize("method", ["simpo", "orpo"])
def test_reference_free_methods_train(models, tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    tokenizer = load_bundled_chat_tokenizer()
    hw = hardware()
    trainer = trainer_for(params(method, trainer={"max_steps": 1, "per_device_train_batch_size": 2,
                                                  "per_device_eval_batch_size": 2, "learning_rate": 1e-3,
                                                  "activation_checkpointing": False}),
                          sft_merged(models / "base", models / "sft", **causal_lm_settings(hw)), tokenizer,
                          {"train": pairs(2), "eval": pairs(2)}, hw, lora())
    assert trainer.train().global_step == 1


def test_unknown_method_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"dpo, simpo, orpo, kto, not 'cpo'"):
        trainer_for(params("cpo"), None, None, {}, hardware(), None)


# what each method's entry must build from params: trainer and config class, and the arguments only it takes
EXPECTED = {
    "dpo": ("DPOTrainer", "DPOConfig", {"loss_type": ["ipo"]}),
    "simpo": ("CPOTrainer", "CPOConfig", {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 0.7}),
    "orpo": ("ORPOTrainer", "ORPOConfig", {}),
    "kto": ("KTOTrainer", "KTOConfig", {"loss_type": "kto", "desirable_weight": 1.5, "undesirable_weight": 0.5}),
}


def test_every_method_in_the_table_has_a_test_and_params_allow_it():
    assert set(EXPECTED) == set(METHODS) and tuple(METHODS) == PREFERENCE_METHODS


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_table_builds_each_methods_trainer_and_config_from_params(models, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    tokenizer = load_bundled_chat_tokenizer()
    hw = hardware()
    given = params(name, loss_type="ipo", simpo_gamma=0.7, beta=0.25,
                   kto={"loss_type": "kto", "desirable_weight": 1.5, "undesirable_weight": 0.5})
    trainer = trainer_for(given, sft_merged(models / "base", models / "sft", **causal_lm_settings(hw)), tokenizer,
                          {"train": pairs(4), "eval": pairs(2)}, hw, lora())
    trainer_class, config_class, own = EXPECTED[name]
    assert type(trainer).__name__ == trainer_class and type(trainer.args).__name__ == config_class
    assert type(config_for(given, hw)).__name__ == config_class
    shared = {"beta": 0.25, "max_length": 96, "max_steps": 3, "learning_rate": 1e-2, "seed": 0,
              "output_dir": "checkpoints/dpo", "report_to": []}
    assert {k: getattr(trainer.args, k) for k in {**shared, **own}} == {**shared, **own}
    assert "lora_A" in "".join(n for n, _ in trainer.model.named_parameters())
    labels = list(trainer.train_dataset["label"]) if "label" in trainer.train_dataset.column_names else None
    if name == "kto":  # four pairs, eight unpaired rows, desirable and undesirable by turns
        assert labels == [True, False] * 4
    else:
        assert labels is None and len(trainer.train_dataset) == 4


def test_kto_rows_alternate_and_never_borrow_a_reply_to_their_own_prompt():
    for n in (3, 4, 5, 16):
        rows = pair_rows(n)
        out = unpair(rows)
        assert len(out) == 2 * n and [r["label"] for r in out] == [True, False] * n
        assert sorted((r["prompt"][-1]["content"], r["completion"][0]["content"]) for r in out) == sorted(
            [(p["prompt"][-1]["content"], p["chosen"][0]["content"]) for p in rows]
            + [(p["prompt"][-1]["content"], p["rejected"][0]["content"]) for p in rows])  # every reply once, own prompt
        assert all(a["prompt"] != b["prompt"] for a, b in zip(out, out[1:])), n


def test_kto_trains_and_reports_the_figures_it_declares(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer = load_bundled_chat_tokenizer()
    hw = hardware()
    trainer = trainer_for(params("kto", trainer={"max_steps": 2, "per_device_train_batch_size": 2,
                                                 "per_device_eval_batch_size": 2, "learning_rate": 1e-2,
                                                 "activation_checkpointing": False}),
                          sft_merged(models / "base", models / "sft", **causal_lm_settings(hw)), tokenizer,
                          {"train": pairs(4), "eval": pairs(4)}, hw, lora())
    assert getattr(trainer, "ref_model", None) is None  # the reference is the SFT model: the adapter switched off
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert trainer.train().global_step == 2
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert moved and all("lora_" in n for n in moved)
    figures = eval_figures("kto", trainer.evaluate())
    assert set(figures) == set(METHODS["kto"].figures) == {"eval_loss", "reward_chosen", "reward_rejected",
                                                           "reward_margin", "kl"}
    assert all(math.isfinite(v) for v in figures.values())
    # every eval batch holds a desirable and an undesirable row, so the margin TRL averages over batches is the
    # difference of the mean rewards
    assert figures["reward_margin"] == pytest.approx(figures["reward_chosen"] - figures["reward_rejected"], abs=1e-5)
    assert figures["reward_chosen"] != 0.0  # the trained adapter moved the policy away from its reference
    name, shown = headline({"method": "kto", "train_pairs": 4, **figures})
    assert name == "kto" and shown == {"reward_margin": figures["reward_margin"], "kl": figures["kl"]}


def test_eval_figures_pick_each_methods_declared_keys():
    logged = {"eval_loss": 0.5, "eval_rewards/accuracies": 0.75, "eval_rewards/margins": 0.2,
              "eval_rewards/chosen": 0.3, "eval_rewards/rejected": 0.1, "eval_kl": 0.05, "eval_logps/chosen": -9.0,
              "epoch": 1.0}
    assert eval_figures("dpo", logged) == {"eval_loss": 0.5, "reward_accuracy": 0.75, "reward_margin": 0.2}
    assert eval_figures("orpo", logged) == eval_figures("simpo", logged) == eval_figures("dpo", logged)
    assert eval_figures("kto", logged) == {"eval_loss": 0.5, "reward_chosen": 0.3, "reward_rejected": 0.1,
                                           "reward_margin": 0.2, "kl": 0.05}


def test_headline_is_named_after_the_method_and_names_what_is_missing():
    dpo = {"method": "dpo", "train_pairs": 8, "eval_loss": 0.5, "reward_accuracy": 0.875, "reward_margin": 0.4}
    assert headline(dpo) == ("dpo", {"reward_accuracy": 0.875, "reward_margin": 0.4})
    with pytest.raises(InputError, match=r"m/dpo.json: no kl \(method kto\)"):
        headline({"method": "kto", "reward_margin": 0.1}, "m/dpo.json")
    with pytest.raises(InputError, match="no method"):
        headline({"reward_accuracy": 0.5}, "m/dpo.json")


def test_a_run_logs_its_own_methods_params_only():
    logged = logged_params(params("dpo"))
    assert "kto" not in logged and logged["max_steps"] == 3 and "trainer" not in logged
    assert logged_params(params("kto"))["kto"]["desirable_weight"] == 1.0


def test_the_fused_head_on_a_cpu_scores_labelled_positions_only_and_the_same(monkeypatch):
    """compact_fused_head: TRL's chunked LM head projects only the labelled positions (the prompt's are skipped),
    with the same log-probabilities and entropies as TRL's every-position CPU path."""
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from ladder.data.models import tiny_model
    from ladder.training.trainer import compact_fused_head

    # TRL's own choice for this test (an earlier test may have switched it), restored after it
    monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "original", trl_utils._use_triton))
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    model, _ = tiny_model("llama", seed=0, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                          num_key_value_heads=2)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.masked_fill(torch.arange(12) < 8, -100)  # the last 4 tokens are the completion
    every = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert compact_fused_head() and compact_fused_head()  # a second call leaves the switch as it is
    compact = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert rows == [2 * 11, 2 * 4]  # shifted labels: 11 positions a row, 4 of them labelled
    assert torch.allclose(every.log_probs, compact.log_probs, atol=1e-6)
    assert torch.allclose(every.entropy, compact.entropy, atol=1e-6)
    assert bool((compact.log_probs[:, :7] == 0).all()) and bool((compact.log_probs[:, 7:] < 0).all())
