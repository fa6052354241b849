"""params.yaml, read and checked before any stage does work.

Read with ruamel.yaml's YAML 1.2 loader: `dvc exp run -S sft.lr=3e-5` writes `3e-05`, which YAML 1.1
loaders (PyYAML) read as a string. Each section has a schema here (pydantic: about 0.1 s to import, so
`--help` stays instant; it names the key, the value and what is allowed in one line). params.yaml holds
every default: a schema declares types, choices and ranges, never a default value, so a key missing from
params.yaml is an error rather than a second default hidden in code. `trainer` sections pass through to
the trainer's own config class, whose fields the stage checks them against before any model loads
(ladder.training.trainer.check_trainer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ladder.errors import InputError

# The choices params allow, declared here once; the modules that act on them import them from here (this file is
# already every stage's dependency: defining them elsewhere would make every stage depend on that module too).
LAUNCHERS = ("python", "accelerate")
# the parsers of ladder/data/formats.py (FORMATS), by name: named here so that checking params does not load them
SOURCE_FORMATS = ("chai_feedback", "chai_prize_flat", "chatml_conversation", "messages", "role_prefixed_text",
                  "zephyr_text", "chai_dpo", "arena_wsdm", "arena_lmsys")
CPU_BF16_CHOICES = ("auto", "on", "off")
OBJECTIVES = ("regression", "classification")          # the reward model's loss
# TRL 1.16's DPO losses: its config takes any string and the trainer refuses an unknown one only at the first
# loss, after the models load (tests/test_params.py reads the list from TRL's own source)
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
PREFERENCE_METHODS = ("dpo", "simpo", "orpo", "kto")  # each an entry of ladder/training/preference.py's table
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")       # what TRL's KTOTrainer computes
DTYPES = ("float16", "bfloat16", "float32")
PARITY_DTYPES = ("float64", "float32")                 # merge's check: float64 measures the merge, not rounding
BNB_METHODS = ("int8", "nf4")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
JUDGE_HEADS = ("cls", "replies")
IDENTICAL_LABELS = ("each", "tie")
TIES = ("drop", "class")                               # arena ties: dropped, or a third label for the judge
BACKENDS = ("hf", "vllm")                              # inference's generation backend
CONTROLS = ("reference", "shuffled")                   # ladder.evaluation.controls
# what inference can generate with: the pipeline's own models and every quantized copy quantize can make
CHAT_MODELS = ("base", "sft", "merged", *BNB_METHODS, *(f"gguf-{t}" for t in GGUF_TYPES))



def _number(value: Any) -> Any:
    """A number as YAML wrote it, never a boolean or a string: `true` is not the row count 1, and a quoted '3e-05'
    would reach the optimizer as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, not {kind(value)}")
    return value


def kind(value: Any) -> str:
    """What a YAML value is, in words, for the one-line messages; a number in quotes says so."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "text"
        return "a number in quotes (text): write it without quotes"
    names = {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a mapping",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
# int | float keeps a number as written (an int row count in clean.mix must not become a float share)
Real = Annotated[int | float, BeforeValidator(_number)]
Share = Annotated[Real, Field(ge=0, le=1)]
Launcher = Literal[LAUNCHERS]
# a YAML 1.1 writer (PyYAML, some `dvc exp run -S` paths) turns on / off into booleans
CpuBf16 = Annotated[Literal[CPU_BF16_CHOICES],
                    BeforeValidator(lambda v: {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v)]
Dtype = Literal[DTYPES]
Trainer = dict[str, Any]  # passed through to transformers / TRL, whose config class names a wrong key


class Section(BaseModel):
    # strict: no value changes type on the way in (pydantic's lax mode reads `true` as 1 and '5' as 5)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LocalSource(Section):
    """A source file on this machine: its own DVC stage depends on that file alone."""
    format: Literal[SOURCE_FORMATS] = Field(description="The parser of ladder/data/formats.py that reads the file into "
                                                        "the unified records.")
    path: Annotated[str, Field(min_length=1)] = Field(description="The file (.jsonl, .json, .parquet or .csv), "
                                                                  "relative to the repository root.")


class HubSource(Section):
    """A hub dataset, pinned to a commit (`revision`; null until `ladder pin` writes one, and the fetch
    stage refuses it meanwhile), its files picked by `split` and, optionally, `files` globs."""
    format: Literal[SOURCE_FORMATS] = Field(description="The parser of ladder/data/formats.py that reads the dataset's "
                                                        "files into the unified records.")
    hub: Annotated[str, Field(min_length=1)] = Field(description="The hub dataset id, e.g. chargoddard/chai-dpo.")
    revision: str | None = Field(description="The commit the dataset is fetched at; null until `ladder pin` "
                                             "writes one, and the fetch stage refuses it meanwhile.")
    split: str | None = Field(None, description="Keeps the data files whose path names this split (a path part "
                                                "such as train/ or train-00000.parquet); null: every data file.")
    files: str | list[str] | None = Field(None, description="A glob or a list of globs (`*` crosses folders) "
                                                            "picking the snapshot's files, e.g. one config of a "
                                                            "repository that holds two; null: every data file.")


class Fetch(Section):
    sources: dict[str, LocalSource] = Field(description="Local source files by name: one fetch stage each, writing "
                                                        "data/raw/<name>.parquet. The order is clean's dedup order "
                                                        "(the first source wins).")
    hub_sources: dict[str, HubSource] = Field(description="Hub datasets by name, after the local sources in dedup "
                                                          "order: one fetch stage each, writing "
                                                          "data/raw/<name>.parquet.")
    base_model: str = Field(description="The chat model SFT and DPO start from (models/base): `bundled:<name>`, "
                                        "`tiny:<name>` or a hub model id (pinned by base_revision).")
    base_revision: str | None = Field(description="The commit of a hub base_model (`ladder pin` writes "
                                                  "it); null for bundled and tiny models.")
    judge_model: str = Field(description="The judge's backbone (models/judge_base): `bundled:<name>`, "
                                         "`tiny:<name>` or a hub model id (pinned by judge_revision).")
    judge_revision: str | None = Field(description="The commit of a hub judge_model; null for bundled and tiny "
                                                   "models.")
    reward_model: str = Field(description="The reward model's own backbone (models/reward_base), so that switching "
                                          "the judge does not retrain the reward model: `bundled:<name>`, "
                                          "`tiny:<name>` or a hub model id.")
    reward_revision: str | None = Field(description="The commit of a hub reward_model; null for bundled and tiny "
                                                    "models.")
    seed: int = Field(description="Initialises the weights of `tiny:` models.")

    @model_validator(mode="after")
    def one_kind_each(self) -> Fetch:
        """A source name is in sources or in hub_sources, never in both."""
        both = sorted(set(self.sources) & set(self.hub_sources))
        if both:
            raise ValueError(f"source {both[0]!r} is both in sources (a local file) and in hub_sources")
        return self


def all_sources(fetch: dict) -> dict[str, dict]:
    """The `fetch` section's sources, local files first, then hub datasets: the order clean's dedup follows (the
    first source wins)."""
    return {**fetch["sources"], **fetch["hub_sources"]}


class Clean(Section):
    seed: int = Field(description="Seeds the stable hashes of the eval split and of the mix draw.")
    eval_fraction: Annotated[Real, Field(gt=0, lt=1)] = Field(
        description="Share of source rows put in eval, by a stable hash of source and row; widened so that no eval "
                    "prompt is also a train prompt.")
    min_turns: NonNegative = Field(description="Conversations with fewer messages (the system message not counted) "
                                               "are dropped.")
    min_message_chars: NonNegative = Field(description="Conversations with a shorter message are dropped.")
    max_message_chars: Positive = Field(description="Conversations with a longer message, and preference pairs with "
                                                    "a longer reply, are dropped.")
    min_conversation_chars: NonNegative = Field(description="Conversations shorter than this in all are dropped.")
    max_conversation_chars: Positive = Field(description="Conversations, and preference pairs' prompts, longer than "
                                                         "this in all are dropped.")
    sft_requires_thumbs_up: bool = Field(description="Drops thumbs-down conversations from the SFT table "
                                                     "(conversations without feedback stay).")
    swipe_pairs: bool = Field(description="Turns each swiped reply of a chai_feedback source into a preference pair, "
                                          "the kept reply chosen.")
    arena_languages: list[str] = Field(description="Arena rows in other languages are dropped (compared "
                                                   "case-insensitively); empty: every language.")
    dedup: bool = Field(description="Drops exact duplicates on normalised text across sources; the first source "
                                    "in fetch order wins.")
    mix: dict[str, Annotated[Real, Field(ge=0)]] = Field(
        description="Train rows kept per source, drawn by the seed: a float is the share kept, an int a row count. "
                    "A source not listed is kept whole; eval rows are never sampled.")

    @field_validator("mix")
    @classmethod
    def shares_or_counts(cls, value: dict) -> dict:
        """A float is a share (at most 1.0), an int a row count."""
        bad = {k: v for k, v in value.items() if isinstance(v, float) and v > 1}
        if bad:
            raise ValueError(f"a float is a share of the rows (at most 1.0), an int a row count: {bad}")
        return value


class Lora(Section):
    r: Positive = Field(description="The LoRA rank (PEFT LoraConfig r).")
    alpha: Annotated[Real, Field(gt=0)] = Field(description="The LoRA scaling numerator (PEFT lora_alpha): the "
                                                            "update is scaled by alpha / r.")
    dropout: Share = Field(description="Dropout on the LoRA input (PEFT lora_dropout).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        description="The module names that get adapters, or all-linear: every linear layer but the output head.")
    bias: Literal["none", "all", "lora_only"] | None = Field(
        None, description="Which biases train (PEFT bias); absent: PEFT's own default (none).")


class JudgeLora(Lora):
    layers: Positive | None = Field(None, description="Adapters on the last N transformer blocks only; null or "
                                                      "absent: every block.")


class ScoreFilter(Section):
    keep_top: Annotated[Real, Field(gt=0, le=1)] | None = Field(
        None, description="Keeps this share of the train conversations, the best-scored first.")
    min_score: Real | None = Field(None, description="Keeps the train conversations scored at least this.")

    @model_validator(mode="after")
    def exactly_one(self) -> ScoreFilter:
        """Exactly one of keep_top or min_score."""
        if (self.keep_top is None) == (self.min_score is None):
            raise ValueError("exactly one of keep_top (a share) or min_score")
        return self


class SelfPairs(Section):
    enabled: bool = Field(description="Adds the self pairs to the train pairs (slow on a CPU: it loads models/base "
                                      "and generates).")
    prompts: Positive = Field(description="Train prompts to sample replies for, chosen by the seed.")
    samples: Annotated[int, Field(ge=2)] = Field(description="Replies sampled per prompt; the lowest-scored one "
                                                             "becomes the pair's rejected reply, the human one its "
                                                             "chosen.")
    max_new_tokens: Positive = Field(description="Tokens generated at most per sampled reply.")
    temperature: Annotated[Real, Field(gt=0)] = Field(description="Sampling temperature.")
    top_p: Annotated[Real, Field(gt=0, le=1)] = Field(description="Nucleus sampling: the smallest set of tokens "
                                                                  "whose probabilities sum to this.")
    top_k: NonNegative = Field(description="Samples among the k most likely tokens; 0: no top-k cut.")
    batch_size: Positive = Field(description="Prompts per generate call.")
    seed: int = Field(description="Seeds the choice of prompts and the sampling.")


class Reward(Section):
    objective: Literal[OBJECTIVES] = Field(description="The reward model's loss: regression is MSE on thumbs-up "
                                                       "0/1 (the Chai author's), classification cross-entropy over "
                                                       "two classes.")
    max_length: Positive = Field(description="Tokens of each scored text, truncated on the left so the latest turns "
                                             "survive (training, the score stage and inference's reply scores).")
    lora: Lora | None = Field(description="LoRA adapters on the reward backbone; null: fine-tune every weight.")
    seed: int = Field(description="Seeds the model's new head and the trainer (seed and data_seed).")
    score_batch_size: Positive = Field(description="Texts per scoring batch: the reward stage's eval, the score "
                                                   "stage and inference's reply scores.")
    cpu_bf16: CpuBf16 = Field(description="On a CPU: train under bfloat16 autocast where the CPU has AVX512-BF16 or "
                                          "AMX (auto), always (on) or never (off); a YAML 1.1 true / false reads as "
                                          "on / off. Ignored on CUDA.")
    launcher: Launcher = Field(description="python: one process; accelerate: `accelerate launch --config_file "
                                           "<accelerate_config>` (ladder/launch.py).")
    accelerate_config: str = Field(description="The accelerate config file used with launcher accelerate "
                                               "(configs/accelerate: ddp or cpu for this stage).")
    trainer: Trainer = Field(description="Passed through to transformers.TrainingArguments, over ladder's own "
                                         "settings (ladder.training.trainer.trainer_arguments). Checked before any model "
                                         "loads by ladder.training.trainer.check_trainer: keys and value types against "
                                         "TrainingArguments, ranges against TRAINER_RANGES.")
    filter: ScoreFilter = Field(description="How the score stage filters train conversations for SFT (eval "
                                            "conversations are all kept): one of keep_top or min_score.")
    min_margin: Real = Field(description="The score stage keeps a train pair when score(chosen) - score(rejected) is "
                                         "at least this; eval pairs are all kept.")
    self_pairs: SelfPairs = Field(description="Extra train pairs made by the score stage from models/base's own "
                                              "worst replies: chosen is the human reply, rejected the lowest-scored "
                                              "sample.")


class Sft(Section):
    chat_template: str = Field(description="The chat template SFT trains with and saves (DPO, self pairs and "
                                           "inference use it too): base keeps the model's own.")
    launcher: Launcher = Field(description="python: one process; accelerate: `accelerate launch --config_file "
                                           "<accelerate_config>` (ladder/launch.py); only rank 0 writes outputs.")
    accelerate_config: str = Field(description="The accelerate config file used with launcher accelerate "
                                               "(configs/accelerate: ddp, fsdp, zero3 on GPUs, cpu for 2 gloo "
                                               "processes).")
    max_length: Positive = Field(description="Tokens per training conversation; a longer one keeps its end.")
    learn_greeting: bool = Field(description="Whether the loss covers a bot's opening greeting (before the first "
                                             "user turn), which is its creator's text; false: it is context only.")
    packing: bool = Field(description="TRL's bfd packing of conversations into padding-free rows (position ids keep "
                                      "them apart); slower on a 2-core CPU.")
    cpu_bf16: CpuBf16 = Field(description="On a CPU: train under bfloat16 autocast where the CPU has AVX512-BF16 or "
                                          "AMX (auto), always (on) or never (off); a YAML 1.1 true / false reads as "
                                          "on / off. Ignored on CUDA.")
    eval_conversations: Positive | None = Field(description="Evaluates on the first N eval conversations by id; "
                                                            "null: all of them.")
    seed: int = Field(description="Seeds the trainer (seed and data_seed).")
    lora: Lora = Field(description="The LoRA adapter SFT trains on the base model.")
    trainer: Trainer = Field(description="Passed through to trl.SFTConfig (a transformers TrainingArguments), over "
                                         "ladder's own settings (ladder.training.trainer.trainer_arguments). Checked before "
                                         "any model loads by ladder.training.trainer.check_trainer: keys and value types "
                                         "against SFTConfig, ranges against TRAINER_RANGES.")

    @field_validator("chat_template")
    @classmethod
    def known_template(cls, value: str) -> str:
        """base (the model's own) or the name of a template in ladder/training/templates (<name>.jinja)."""
        names = sorted(p.stem for p in (Path(__file__).parent / "training" / "templates").glob("*.jinja"))
        if value != "base" and value not in names:
            raise ValueError(f"base (the model's own) or one of ladder/training/templates: {', '.join(names)}")
        return value


class Kto(Section):
    loss_type: Literal[KTO_LOSS_TYPES] = Field(description="KTOConfig loss_type: kto or apo_zero_unpaired.")
    desirable_weight: Annotated[Real, Field(gt=0)] = Field(description="KTOConfig desirable_weight: the weight of "
                                                                       "the desirable (chosen) replies' loss.")
    undesirable_weight: Annotated[Real, Field(gt=0)] = Field(description="KTOConfig undesirable_weight: the weight "
                                                                         "of the undesirable (rejected) replies' "
                                                                         "loss.")


class Dpo(Section):
    method: Literal[PREFERENCE_METHODS] = Field(description="The preference method of ladder/training/preference.py's table: "
                                                            "dpo (TRL's DPOTrainer), simpo (CPOTrainer with the "
                                                            "simpo loss), orpo (ORPOTrainer), kto (KTOTrainer).")
    loss_type: Literal[DPO_LOSS_TYPES] = Field(description="TRL's DPO loss, used with method dpo only.")
    beta: Annotated[Real, Field(gt=0)] = Field(description="The method's beta, passed to its TRL config (for DPO "
                                                           "the strength of the pull towards the reference model).")
    launcher: Launcher = Field(description="python: one process; accelerate: `accelerate launch --config_file "
                                           "<accelerate_config>` (ladder/launch.py).")
    accelerate_config: str = Field(description="The accelerate config file used with launcher accelerate "
                                               "(configs/accelerate: ddp, fsdp, zero3 or cpu).")
    simpo_gamma: Real = Field(description="SimPO's target reward margin (CPOConfig simpo_gamma), used with method "
                                          "simpo only.")
    kto: Kto = Field(description="KTOConfig settings, used with method kto only: each pair gives one desirable row "
                                 "(its chosen reply) and one undesirable row (its rejected reply).")
    cpu_bf16: CpuBf16 = Field(description="On a CPU: train under bfloat16 autocast where the CPU has AVX512-BF16 or "
                                          "AMX (auto), always (on) or never (off); a YAML 1.1 true / false reads as "
                                          "on / off. Ignored on CUDA.")
    max_prompt_length: Positive = Field(description="Tokens of each prompt: earlier turns are dropped first, whole, "
                                                    "the system message kept.")
    max_length: Positive = Field(description="Tokens of prompt and reply together (the TRL config's max_length).")
    eval_pairs: Positive | None = Field(description="Evaluates on the first N eval pairs by id; null: all of them.")
    seed: int = Field(description="Seeds the trainer (seed and data_seed).")
    lora: Lora = Field(description="The new LoRA adapter trained over base + SFT merged; with it switched off the "
                                   "same weights are the reference model.")
    trainer: Trainer = Field(description="Passed through to the TRL config of the method (DPOConfig, CPOConfig, "
                                         "ORPOConfig or KTOConfig), over ladder's own settings "
                                         "(ladder.training.trainer.trainer_arguments). Checked before any model loads by "
                                         "ladder.training.trainer.check_trainer: keys and value types against that config, "
                                         "ranges against TRAINER_RANGES.")

    @model_validator(mode="after")
    def prompt_fits(self) -> Dpo:
        """max_prompt_length below max_length: the replies need room."""
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length "
                             f"({self.max_length}): the replies need room")
        return self


class Generation(Section):
    temperature: Annotated[Real, Field(gt=0)] = Field(description="Sampling temperature.")
    top_p: Annotated[Real, Field(gt=0, le=1)] = Field(description="Nucleus sampling: the smallest set of tokens "
                                                                  "whose probabilities sum to this.")
    top_k: NonNegative = Field(description="Samples among the k most likely tokens; 0: no top-k cut.")
    max_new_tokens: Positive = Field(description="Tokens generated at most per reply.")


class Merge(Section):
    dtype: Dtype = Field(description="The merged model's weights are cast to this after merging in float32 (a "
                                     "16-bit type for serving; float32 keeps the CPU parity check exact).")
    parity_dtype: Literal[PARITY_DTYPES] = Field(description="The parity check computes merged and unmerged models "
                                                             "in this: float64 measures the merge, not float32 "
                                                             "rounding; float32 for models too large to hold at 8 "
                                                             "bytes per parameter.")
    parity_conversations: Positive = Field(description="Eval conversations on which the merged and unmerged logits "
                                                       "are compared.")
    generation: Generation = Field(description="Written to the merged model's generation_config.json: the serving "
                                               "settings (Chai's).")


class Quantize(Section):
    formats: list[Literal[(*BNB_METHODS, "gguf")]] = Field(
        description="The formats made from models/merged: int8 (bitsandbytes LLM.int8), nf4 (bitsandbytes 4-bit, "
                    "double quantization), gguf (one file per gguf_types entry).")
    gguf_types: list[Literal[GGUF_TYPES]] = Field(description="The GGUF tensor types made with format gguf: one "
                                                              "models/quantized/gguf/model-<type>.gguf each.")
    dtype: Dtype = Field(description="Storage of the weights bitsandbytes leaves unquantized (embeddings, norms, "
                                     "lm_head).")
    nf4_compute_dtype: Dtype = Field(description="What NF4 layers compute in (bfloat16 on a GPU).")
    eval_conversations: Positive = Field(description="Eval conversations on which each format's KL divergence, "
                                                     "top-1 agreement and perplexity are measured against "
                                                     "models/merged.")
    max_length: Positive = Field(description="Tokens of each conversation compared.")
    generation_tokens: Positive = Field(description="Greedy tokens generated for each format's tokens/s timing.")


class FieldBudget(Section):
    prompt: Positive = Field(description="Tokens kept from the end of the prompt field.")
    response: Positive = Field(description="Tokens kept from the end of each response field.")


class Classifier(Section):
    preference_share: Share = Field(description="Share of the preference pairs' source rows (a stable hash) the "
                                                "judge learns from; the score stage holds them out of DPO. 0: arena "
                                                "only (the WSDM setting).")
    max_length: Positive = Field(description="Tokens of the judge's input (prompt and both responses), cut on the "
                                             "left.")
    field_budget: FieldBudget | None = Field(description="Tokens kept from the end of each field before max_length "
                                                         "applies; null: no per-field cut.")
    head: Literal[JUDGE_HEADS] = Field(description="cls: the WSDM head over the pooled position; replies: each "
                                                   "reply's own tokens scored by one shared scorer, so a swap swaps "
                                                   "the scores (ladder/judge/classifier.py RepliesHead).")
    head_dropout: Share = Field(description="Dropout before the judge's head.")
    ties: Literal[TIES] = Field(description="drop: arena ties are dropped, two labels; class: tie is a third label.")
    swap_augment: bool = Field(description="Trains on every pair again with a and b swapped and the label flipped.")
    identical_pairs: Share = Field(description="Share of train rows whose reply is also put against itself, "
                                               "labelled as identical_label says.")
    identical_label: Literal[IDENTICAL_LABELS] = Field(description="The label of a reply against itself: each (once "
                                                                   "a win for each side) or tie.")
    rejected_ties: bool = Field(description="With ties as a class: two replies rejected in one turn (chai-dpo's "
                                            "rejected list, a run of swipes) become a tie row.")
    quantization: Literal[("none", *BNB_METHODS)] = Field(description="Loads the backbone through bitsandbytes "
                                                                      "(int8 or nf4: QLoRA, needs lora); none: as "
                                                                      "is.")
    launcher: Launcher = Field(description="python: one process; accelerate: `accelerate launch --config_file "
                                           "<accelerate_config>` (ladder/launch.py).")
    accelerate_config: str = Field(description="The accelerate config file used with launcher accelerate "
                                               "(configs/accelerate: ddp or cpu).")
    lora: JudgeLora | None = Field(description="LoRA adapters on the judge's backbone; null: fine-tune the whole "
                                               "backbone (not with quantization).")
    seed: int = Field(description="Seeds the judge's model and the trainer (seed and data_seed).")
    cpu_bf16: CpuBf16 = Field(description="On a CPU: train under bfloat16 autocast where the CPU has AVX512-BF16 or "
                                          "AMX (auto), always (on) or never (off); a YAML 1.1 true / false reads as "
                                          "on / off. Ignored on CUDA.")
    eval_batch_size: Positive = Field(description="Texts per batch when the judge scores (two per pair with swap "
                                                  "TTA): the classifier stage's eval and inference's judgments.")
    trainer: Trainer = Field(description="Passed through to transformers.TrainingArguments, over ladder's own "
                                         "settings (ladder.training.trainer.trainer_arguments). Checked before any model "
                                         "loads by ladder.training.trainer.check_trainer: keys and value types against "
                                         "TrainingArguments, ranges against TRAINER_RANGES.")

    @model_validator(mode="after")
    def consistent(self) -> Classifier:
        """quantization other than none needs lora: a quantized backbone cannot be fine-tuned whole."""
        if self.quantization != "none" and self.lora is None:
            raise ValueError(f"quantization {self.quantization} needs lora: a quantized backbone cannot be "
                             f"fine-tuned whole")
        return self


class Sampling(Generation):
    stop: list[str] = Field(description="Strings that end a reply: generation stops there and the reply is cut "
                                        "before it.")
    max_input_tokens: Positive = Field(description="Tokens of each prompt, truncated on the left (with vLLM the "
                                                   "model length is this plus max_new_tokens).")


class Inference(Section):
    models: Annotated[list[str], Field(min_length=1)] = Field(
        description=f"The chat models that answer the prompts, any of {', '.join(CHAT_MODELS)} (the quantized ones "
                    f"are the quantize stage's).")
    n_prompts: Positive = Field(description="Eval conversations, cut before their last assistant turn, chosen by "
                                            "the seed (thumbs-down conversations left out).")
    seed: int = Field(description="Seeds the choice of prompts, the sampling and the shuffled control.")
    controls: list[Literal[CONTROLS]] = Field(description="Scored and judged like models, never generated: "
                                                          "reference (the conversation's own next reply) and "
                                                          "shuffled (the reference of another prompt of the same "
                                                          "source; ladder/evaluation/controls.py).")
    backend: Literal[BACKENDS] = Field(description="hf: transformers' generate; vllm: vLLM when it is installed and "
                                                   "a GPU is present (base, merged and GGUF models), else hf.")
    sampling: Sampling = Field(description="How every model samples its replies.")
    best_of: Positive = Field(description="Replies sampled per prompt; the reward model keeps the best.")
    batch_size: Positive = Field(description="Prompts per generate call, in length order (transformers backend).")

    @field_validator("models", "controls")
    @classmethod
    def once_each(cls, value: list) -> list:
        """Each at most once."""
        if len(set(value)) < len(value):
            raise ValueError(f"each at most once: {value}")
        return value

    @field_validator("models")
    @classmethod
    def known_models(cls, value: list[str]) -> list[str]:
        """Each a model inference can generate with (CHAT_MODELS)."""
        unknown = [m for m in value if m not in CHAT_MODELS]
        if unknown:
            raise ValueError(f"unknown {unknown}; known: {', '.join(CHAT_MODELS)}")
        return value


class Validity(Section):
    max_identical_bias: Share = Field(description="Largest |mean P(first wins) - 0.5| allowed on a reply against "
                                                  "itself (one order, no TTA).")
    max_flip_rate: Share = Field(description="Largest share allowed of generated pairs (two different replies) "
                                             "whose pick flips with the order.")
    min_control_separation: Share = Field(description="The 95% interval of P(reference beats shuffled) must lie "
                                                      "above this.")
    min_judge_reward_agreement: Share = Field(description="Smallest agreement allowed between the judge's and the "
                                                          "reward model's picks (chance is 0.5).")
    max_length_shift: Annotated[Real, Field(ge=0)] = Field(description="Most Elo a generated model may move once "
                                                                       "reply length is controlled.")


class Metrics(Section):
    anchor: str = Field(description="The model fixed at anchor_rating (the first generated model if it is not "
                                    "generated).")
    anchor_rating: Real = Field(description="The anchor's Elo rating.")
    bootstrap: NonNegative = Field(description="Resamplings of the prompts for the 95% Elo intervals.")
    seed: int = Field(description="Seeds the bootstrap and the choice of review examples.")
    validity: Validity = Field(description="Thresholds of the checks that decide whether the ladder is valid "
                                           "(ladder/evaluation/validity.py); every check must pass.")


class Tolerance(Section):
    absolute: Annotated[Real, Field(ge=0)] = Field(description="Absolute part of the tolerance, for figures that "
                                                               "are themselves float error.")
    relative: Annotated[Real, Field(ge=0)] = Field(description="Relative part of the tolerance, times |value|.")


class Review(Section):
    examples: NonNegative = Field(description="Prompts shown with the replies of the anchor and of the best model.")
    tolerance: Tolerance = Field(description="A metric whose change is within max(absolute, relative * |value|) is "
                                             "counted, not listed, in the metrics table (float noise between "
                                             "CPUs).")


class Params(Section):
    fetch: Fetch = Field(description="The data sources and starting models, each fetched by its own DVC stage "
                                     "(stages/fetch.py).")
    clean: Clean = Field(description="Every raw source to the unified records: filtered, deduplicated, split into "
                                     "train and eval, mixed (stages/clean.py, ladder/data/cleaning.py).")
    reward: Reward = Field(description="The reward model (stages/reward.py) and the score stage's filters and self "
                                       "pairs (stages/score.py).")
    sft: Sft = Field(description="LoRA supervised fine-tuning of the base model on the scored conversations "
                                 "(stages/sft.py, TRL SFTTrainer).")
    dpo: Dpo = Field(description="Preference tuning from the SFT model by the method ladder/training/preference.py names "
                                 "(stages/dpo.py).")
    merge: Merge = Field(description="Base + SFT + DPO adapters merged into one model, checked against the "
                                     "unmerged stack (stages/merge.py).")
    quantize: Quantize = Field(description="The merged model in smaller formats, each measured against it "
                                           "(stages/quantize.py).")
    classifier: Classifier = Field(description="The pairwise judge, WSDM Cup recipe (stages/classifier.py, "
                                               "ladder/judge/classifier.py).")
    inference: Inference = Field(description="Every chat model answers the same held-out prompts; the judge "
                                             "compares them, the reward model scores them (stages/inference.py).")
    metrics: Metrics = Field(description="The Elo ladder from the judge's verdicts and its validity checks "
                                         "(stages/metrics.py).")
    review: Review = Field(description="Read by `python -m ladder.tools.review <base>` (the pull-request comment), by no "
                                       "stage.")


class ParamsError(InputError):
    """A params file that does not fit its schema: one line naming the key, the value and what is allowed."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file as plain data (YAML 1.2), unchecked: recipes and partial params files. A file that is not UTF-8
    or not YAML, or whose top level is not a mapping, is one line naming the file, the line and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"params file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x})") from None
    try:
        loaded = YAML(typ="safe", pure=True).load(text)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
        hint = " (YAML indents with spaces, not tabs)" if "\\t" in problem else ""
        raise InputError(f"{where}: {problem}{hint}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping of sections at the top level, not {type(loaded).__name__}")
    return loaded


def one_line(error: ValidationError, data: Any, source: str) -> str:
    """The first schema error as `source: key.sub = value: what is allowed` (and how many more there are). A value
    that fits no member of a union (int | float, str | list) fails once per member: those count as one error."""
    def where(entry: dict) -> str:
        # pydantic adds tags (union members, validators) to the location: keep the parts that are keys of the data
        keys, node = [], data
        for part in entry["loc"]:
            if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) \
                    and part < len(node):
                keys.append(str(part))
                node = node[part]
        if entry["type"] == "missing":  # the key that is not there
            keys.append(str(entry["loc"][-1]))
        return ".".join(keys)

    errors = error.errors()
    first, key = errors[0], where(errors[0])
    same = [e for e in errors if where(e) == key]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "missing (params.yaml holds every setting)"
    elif len(same) > 1 and all(e["msg"].startswith("Input should be ") for e in same):
        message = "Input should be " + " or ".join(dict.fromkeys(e["msg"].removeprefix("Input should be ")
                                                                  for e in same))
    value = first.get("input")
    # a check of a whole mapping names its own keys and values: the mapping would only bury them
    shown = "" if first["type"] == "missing" or isinstance(value, dict) else f" = {value!r}"
    more = len(errors) - len(same)
    return f"{source}: {key or '(top level)'}{shown}: {message}" + (f" ({more} more)" if more else "")


def validate(data: dict, source: str = "params.yaml") -> dict[str, Any]:
    """`data` checked against the schemas; returned as plain dicts (what the stages index)."""
    try:
        return Params.model_validate(data).model_dump(exclude_unset=True)  # as written: no keys added
    except ValidationError as error:
        raise ParamsError(one_line(error, data, source)) from None


def checked(name: str, data: dict, source: str = "params.yaml") -> dict[str, Any]:
    """Section `name` of `data` checked against its schema alone (a tool that reads one section)."""
    if name not in data:
        raise ParamsError(f"{source}: {name}: missing (params.yaml holds every setting)")
    try:
        return Params.model_fields[name].annotation.model_validate(data[name]).model_dump(exclude_unset=True)
    except ValidationError as error:
        raise ParamsError(one_line(error, data[name], f"{source}: {name}")) from None


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml, every section checked against its schema."""
    return validate(read_yaml(path), str(path))


def section(name: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    params = load_params(path)
    if name not in params:
        raise ParamsError(f"{path}: no section {name!r}")
    return params[name]
