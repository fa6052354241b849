"""Recipes resolve to valid trainer and LoRA configs without a GPU, and name only parameters that exist."""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from ladder.params import load_params, read_yaml
from ladder.tools.recipes import apply, merge, round_trip
from ladder.training.trainer import cpu_autocast, cpu_bf16_flags, trainer_arguments, with_cpu_autocast

REPO = Path(__file__).resolve().parents[1]
CPU = {"cuda": False, "bf16": False, "flash_attn": False, "device": "cpu"}
GPU = {"cuda": True, "bf16": True, "flash_attn": True, "device": "test"}


def keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("trainer", "lora", "sources", "hub_sources", "filter"):
            out |= keys(value, prefix + key + ".")
    return out


@pytest.fixture
def params_with(tmp_path):
    def load(recipe: str) -> dict:
        shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
        apply(REPO / "recipes" / f"{recipe}.yaml", tmp_path / "params.yaml")
        return load_params(tmp_path / "params.yaml")
    return load


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (REPO / "recipes").glob("*.yaml")))
def test_recipes_name_only_existing_parameters(recipe):
    default = load_params(REPO / "params.yaml")
    overrides = read_yaml(REPO / "recipes" / f"{recipe}.yaml")
    assert keys(overrides) <= keys(default), keys(overrides) - keys(default)


def test_chai_recipe_builds_the_authors_sft_settings(params_with):
    from peft import LoraConfig
    from trl import SFTConfig

    params = params_with("chai")
    sft = params["sft"]
    config = SFTConfig(**trainer_arguments(sft["trainer"], "/tmp/unused", sft["seed"], CPU),
                       max_length=sft["max_length"])
    assert (config.num_train_epochs, config.per_device_train_batch_size, config.gradient_accumulation_steps) == (2, 2, 16)
    assert (config.learning_rate, config.weight_decay, config.max_grad_norm) == (7e-6, 0.001, 0.3)
    assert config.warmup_steps == pytest.approx(0.03) and config.lr_scheduler_type == "cosine"
    assert config.optim == "paged_adamw_32bit" and config.max_length == 1024
    lora = LoraConfig(r=sft["lora"]["r"], lora_alpha=sft["lora"]["alpha"], lora_dropout=sft["lora"]["dropout"],
                      target_modules=sft["lora"]["target_modules"], bias=sft["lora"]["bias"])
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (32, 16, 0.1)
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert sft["chat_template"] == "mistral-nemo"


def test_hardware_decides_precision_and_optimizer_unless_params_do():
    assert trainer_arguments({}, "o", 0, GPU, optim_gpu="paged_adamw_32bit")["optim"] == "paged_adamw_32bit"
    assert trainer_arguments({}, "o", 0, GPU)["bf16"] is True
    cpu = trainer_arguments({}, "o", 0, CPU, optim_gpu="paged_adamw_32bit")
    assert cpu["optim"] == "adamw_torch_fused" and cpu["bf16"] is False and cpu["report_to"] == "none"
    assert trainer_arguments({"optim": "sgd"}, "o", 0, CPU)["optim"] == "sgd"


def test_cpu_bf16_follows_the_cpus_own_bfloat16_and_never_touches_cuda(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512bw\n\nprocessor\t: 1\n")
    assert cpu_bf16_flags(info) == ["avx512_bf16"]
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_bf16_flags(info) == [] and cpu_bf16_flags(tmp_path / "missing") == []
    assert cpu_autocast("auto", CPU, ["amx_bf16"])[0] is True
    assert cpu_autocast("auto", CPU, [])[0] is False
    assert cpu_autocast("on", CPU, [])[0] is True and cpu_autocast("off", CPU, ["avx512_bf16"])[0] is False
    assert cpu_autocast("on", GPU, ["avx512_bf16"])[0] is False  # the GPU keeps its own choice
    assert cpu_autocast(True, CPU, [])[0] is True and cpu_autocast(False, CPU, ["amx_bf16"])[0] is False  # YAML 1.1
    with pytest.raises(ValueError, match="classifier.cpu_bf16 must be one of auto, on, off, not 'yes'"):
        with_cpu_autocast(CPU, "yes", "classifier")
    on = trainer_arguments({}, "o", 0, with_cpu_autocast(CPU, "on", "reward"))
    assert on["bf16"] is True and on["use_cpu"] is True
    assert "use_cpu" not in trainer_arguments({}, "o", 0, with_cpu_autocast(CPU, "off", "reward"))
    gpu = trainer_arguments({}, "o", 0, {**GPU, "cpu_bf16": True})
    assert gpu["bf16"] is True and "use_cpu" not in gpu


def test_merge_is_recursive_and_replaces_leaves():
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    assert merge(base, {"a": {"c": {"d": 3}}, "e": [2]}) == {"a": {"b": 1, "c": {"d": 3}}, "e": [2]}


def test_assign_writes_one_setting_read_as_yaml_and_names_a_missing_section():
    from ladder.tools.recipes import assign

    data = {"sft": {"trainer": {"max_steps": 32}, "packing": False}}
    assign(data, "sft.trainer.max_steps=8")
    assign(data, "sft.packing=true")
    assign(data, "sft.lora=null")
    assert data == {"sft": {"trainer": {"max_steps": 8}, "packing": True, "lora": None}}
    with pytest.raises(KeyError, match="no section 'trainer'"):
        assign({"dpo": {}}, "dpo.trainer.max_steps=1")


def test_chai_recipe_builds_the_authors_dpo_settings(params_with):
    from trl import DPOConfig

    dpo = params_with("chai")["dpo"]
    config = DPOConfig(**trainer_arguments(dpo["trainer"], "/tmp/unused", dpo["seed"], CPU),
                       max_length=dpo["max_length"], beta=dpo["beta"], loss_type=[dpo["loss_type"]])
    assert (config.max_steps, config.per_device_train_batch_size, config.gradient_accumulation_steps) == (5000, 2, 4)
    assert (config.learning_rate, config.beta, config.loss_type, config.max_length) == (1e-5, 0.1, ["sigmoid"], 1024)
    assert config.optim == "adamw_torch" and dpo["max_prompt_length"] == 512
    assert (dpo["lora"]["r"], dpo["lora"]["alpha"], dpo["lora"]["dropout"]) == (16, 16, 0.05)
    assert params_with("chai")["merge"]["dtype"] == "bfloat16"


def test_wsdm_recipe_builds_the_judge_settings(params_with):
    from peft import LoraConfig
    from transformers import TrainingArguments

    from ladder.export.quantization import bnb_config

    params = params_with("wsdm")
    judge = params["classifier"]
    args = TrainingArguments(**trainer_arguments(judge["trainer"], "/tmp/unused", judge["seed"], CPU))
    # the team's 16 pairs an update, as 2 x 8: 8 pairs of 2200 tokens do not fit one GPU without checkpointing
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 2, 8)
    assert (args.learning_rate, args.optim, args.lr_scheduler_type, args.seed) == (2e-4, "adamw_8bit", "linear", 0xFACED)
    assert args.warmup_steps == pytest.approx(0.025)
    lora = LoraConfig(r=judge["lora"]["r"], lora_alpha=judge["lora"]["alpha"], lora_dropout=judge["lora"]["dropout"],
                      target_modules=judge["lora"]["target_modules"])
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 4, 0.05)
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    quantization = bnb_config(judge["quantization"])
    assert quantization.load_in_8bit and quantization.llm_int8_threshold == 6.0
    assert (judge["max_length"], judge["head"], judge["head_dropout"], judge["ties"]) == (2200, "cls", 0.1, "drop")
    assert params["fetch"]["judge_model"] == "google/gemma-2-9b-it" and len(params["fetch"]["judge_revision"]) == 40
    # the judge's backbone is its own: the reward model keeps the default's
    assert params["fetch"]["reward_model"] == load_params(REPO / "params.yaml")["fetch"]["reward_model"]


RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))


def lora(settings: dict, task: str):
    from peft import LoraConfig

    return LoraConfig(task_type=task, r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                      target_modules=settings["target_modules"], bias=settings.get("bias", "none"))


@pytest.mark.parametrize("recipe", ["default", *RECIPES])
@pytest.mark.parametrize("hw", [CPU, GPU | {"bf16": False}], ids=["cpu", "gpu"])  # bf16 needs a real GPU to build
def test_every_recipe_resolves_to_valid_trainer_lora_quantization_and_launch_settings(params_with, recipe, hw):
    from transformers import TrainingArguments
    from trl import DPOConfig, SFTConfig

    from ladder.launch import TRAINING_STAGES, command
    from ladder.export.quantization import bnb_config

    params = load_params(REPO / "params.yaml") if recipe == "default" else params_with(recipe)
    reward, sft, dpo, judge = (params[s] for s in ("reward", "sft", "dpo", "classifier"))
    TrainingArguments(**trainer_arguments(reward["trainer"], "/tmp/unused", reward["seed"], hw))
    SFTConfig(**trainer_arguments(sft["trainer"], "/tmp/unused", sft["seed"], hw), max_length=sft["max_length"])
    DPOConfig(**trainer_arguments(dpo["trainer"], "/tmp/unused", dpo["seed"], hw), max_length=dpo["max_length"],
              beta=dpo["beta"], loss_type=[dpo["loss_type"]])
    TrainingArguments(**trainer_arguments(judge["trainer"], "/tmp/unused", judge["seed"], hw))
    assert lora(sft["lora"], "CAUSAL_LM").r > 0 and lora(dpo["lora"], "CAUSAL_LM").r > 0
    for stage in (reward, judge):
        if stage.get("lora"):
            assert lora(stage["lora"], "SEQ_CLS").r > 0
    assert judge["quantization"] == "none" or bnb_config(judge["quantization"]) is not None
    for method in params["quantize"]["formats"]:
        if method != "gguf":
            assert bnb_config(method, params["quantize"]["nf4_compute_dtype"]) is not None
    for stage in TRAINING_STAGES:  # the launcher settings name a config accelerate can read
        settings = params[stage] | {"launcher": "accelerate"}
        assert command(stage, {**settings, "accelerate_config": str(REPO / settings["accelerate_config"])}, "p.yaml")


@pytest.mark.parametrize("recipe", ["default", *RECIPES])
def test_every_data_source_names_a_known_format_and_a_pinned_place(params_with, recipe):
    """A hub entry holds a commit hash, or nothing yet (the fetch stage refuses it until ladder.tools.pin has
    written the commit); never a branch name, which would fetch different bytes over time."""
    from ladder.data.formats import FORMATS

    params = load_params(REPO / "params.yaml") if recipe == "default" else params_with(recipe)
    for name, source in params["fetch"]["sources"].items():
        assert source["format"] in FORMATS, (name, source["format"])
        assert source["path"] and "hub" not in source, name
    for name, source in params["fetch"]["hub_sources"].items():
        assert source["format"] in FORMATS, (name, source["format"])
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", source["hub"]), name
        assert source["revision"] is None or re.fullmatch(r"[0-9a-f]{40}", source["revision"]), name
    for model in ("base", "judge", "reward"):
        revision = params["fetch"][f"{model}_revision"]
        assert revision is None or re.fullmatch(r"[0-9a-f]{40}", revision), model


def test_pin_writes_commits_for_hub_entries_only(params_with, tmp_path):
    from ladder.tools.pin import pin
    from ladder.tools.recipes import edit

    chai = params_with("chai")["fetch"]  # now in tmp_path
    before = {n: s.get("revision") for n, s in chai["hub_sources"].items()}
    # the commits seen in public pages; the three other datasets are left to ladder.tools.pin
    assert chai["reward_revision"] == "7b40bb0f92c45fefa957d088000d8648e5c7fa33"
    assert {n: r[:8] for n, r in before.items() if r} == {"chai": "f08138f6", "gpt_realm": "388ea1e8",
                                                         "hieu_roleplay": "cda57d52", "chai_dpo": "2abdde44"}
    edit(tmp_path / "params.yaml", lambda data: data["fetch"].update(reward_revision="main"))  # a branch: resolved
    asked = []

    def resolve(kind, repo, revision):
        asked.append((kind, repo, revision))
        return hashlib.sha1(repo.encode()).hexdigest()

    edit(tmp_path / "params.yaml", lambda data: pin(data["fetch"], resolve))
    fetch = load_params(tmp_path / "params.yaml")["fetch"]
    hub = fetch["hub_sources"]
    assert len(hub) == 7 and all(s["revision"] == (before[n] or hashlib.sha1(s["hub"].encode()).hexdigest())
                                 for n, s in hub.items())
    # exactly the unpinned entries were looked up: not the pinned datasets, not the pinned base model
    assert sorted(r for _, r, _ in asked) == sorted([s["hub"] for n, s in hub.items() if before[n] is None]
                                                    + ["microsoft/DialoGPT-medium"])
    assert ("model", "microsoft/DialoGPT-medium", "main") in asked
    assert fetch["sources"]["wsdm"]["path"] and "revision" not in fetch["sources"]["wsdm"]  # local: untouched
    assert fetch["base_revision"] == "04d8a90549d23fc6bd7f642064003592df51e9b3"  # already a commit: not asked
    assert fetch["reward_revision"] == hashlib.sha1(b"microsoft/DialoGPT-medium").hexdigest()
    assert "# The Chai role-play recipe" not in (tmp_path / "params.yaml").read_text()  # recipe comments stay out
    asked.clear()
    edit(tmp_path / "params.yaml", lambda data: pin(data["fetch"], resolve))
    assert asked == []  # pinned once, pinned for good


def test_pin_refuses_an_answer_that_is_not_a_commit():
    from ladder.tools.pin import pin

    with pytest.raises(ValueError, match="not a commit hash"):
        pin({"hub_sources": {"x": {"format": "chai_dpo", "hub": "a/b", "revision": "main"}}}, lambda *_: "main")


def line_of(text: str, start: str) -> tuple[int, str]:
    """(index, line) of the first line of `text` that starts with `start` once unindented."""
    lines = text.splitlines()
    return next((i, line) for i, line in enumerate(lines) if line.strip().startswith(start))


def test_a_recipe_replaces_or_drops_the_comments_of_the_keys_it_changes(tmp_path):
    """On the real params.yaml and recipe: a comment that described the default's value leaves with it."""
    params = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    before = params.read_text()
    assert "num_train_epochs: 2         # the planted signal needs the second epoch" in before
    apply(REPO / "recipes" / "chai.yaml", params)
    after = params.read_text()
    lines = after.splitlines()
    # changed, and the recipe has no comment for it: the default's comment is gone, not left beside 3 epochs
    assert "the planted signal needs the second epoch" not in after
    assert line_of(after, "num_train_epochs: 3")[1].strip() == "num_train_epochs: 3"
    # changed: the lines above sft's first key (the default's own description) go with it
    assert "The default here is sized for a 2-core CPU" not in after
    # not changed (absent from the recipe, or set to the value it had): comments stay
    assert "  min_turns: 3                  # messages, not counting the system message" in lines
    assert "  objective: regression         # or classification (cross-entropy over two classes)" in lines
    # the recipe's comments arrive beside (and above) their keys
    assert "  chat_template: mistral-nemo   # Tekken format, keeps the system message " \
           "(ladder/training/templates/mistral-nemo.jinja)" in lines
    dpo_at = lines.index("dpo:")
    checkpointing = next(i for i in range(dpo_at, len(lines)) if lines[i].strip() == "activation_checkpointing: true")
    assert lines[checkpointing - 2].strip().startswith("# 2 pairs = 4 sequences of 1024 tokens")
    assert "# the second commit: uploads ChaiML_20230908" in lines[line_of(after, "chai: {format: chai_feedback")[0] - 1]
    assert "# The JUDGE is not part of this recipe" not in after  # the recipe's header is no key's comment
    assert load_params(params)["reward"]["trainer"]["num_train_epochs"] == 3


def test_comments_that_belong_to_the_next_key_stay_with_it(tmp_path):
    """ruamel keeps the lines above a key on the token of the key before it: a key added after that one, a value
    that becomes a block mapping, or a removed source must not carry them off."""
    params = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    apply(REPO / "recipes" / "smoke.yaml", params)  # adds reward.trainer.max_steps after its last key
    lines = params.read_text().splitlines()
    filter_at = line_of(params.read_text(), "filter: {keep_top: 0.9}")[0]
    assert lines[filter_at - 1] == "  # Scoring and filtering (stage `score`); train rows only, eval rows are all kept."
    assert lines[filter_at - 2].strip() == "max_steps: 4"
    assert lines[line_of(params.read_text(), "save_strategy:")[0]].strip() == 'save_strategy: "no"'
    base = tmp_path / "small.yaml"
    base.write_text("fetch:\n  # above x\n  x: 1  # x is one\n  y: null  # y: none yet\n  # above z\n  z: 3\n"
                    "  sources:\n    one: {p: 1}\n    # above two\n    two: {p: 2}  # two's\n    # above three\n"
                    "    three: {p: 3}\n")
    data = round_trip().load(base.read_text())
    merge(data, round_trip().load("fetch:\n  x: 2  # two now\n  y:\n    k: 1  # a mapping now\n"
                                  "  sources: {two: null}\n"))
    with open(base, "w", encoding="utf-8") as out:
        round_trip().dump(data, out)
    assert base.read_text() == ("fetch:\n  x: 2  # two now\n  y:\n    k: 1  # a mapping now\n  # above z\n  z: 3\n"
                                "  sources:\n    one: {p: 1}\n    # above three\n    three: {p: 3}\n")
