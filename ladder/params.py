"""params.yaml, read and checked before any stage does work.

Read with ruamel.yaml's YAML 1.2 loader: `dvc exp run -S sft.lr=3e-5` writes `3e-05`, which YAML 1.1
loaders (PyYAML) read as a string. Each section has a schema here (pydantic: about 0.1 s to import, so
`--help` stays instant; it names the key, the value and what is allowed in one line). params.yaml holds
every default: a schema declares types, choices and ranges, never a default value, so a key missing from
params.yaml is an error rather than a second default hidden in code. `trainer` sections pass through to
the trainer's own config class, whose fields the stage checks them against before any model loads
(ladder.training.check_trainer).
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
# the parsers of ladder/formats.py (FORMATS), by name: named here so that checking params does not load them
SOURCE_FORMATS = ("chai_feedback", "chai_prize_flat", "chatml_conversation", "messages", "role_prefixed_text",
                  "zephyr_text", "chai_dpo", "arena_wsdm", "arena_lmsys")
CPU_BF16_CHOICES = ("auto", "on", "off")
OBJECTIVES = ("regression", "classification")          # the reward model's loss
# TRL 1.16's DPO losses: its config takes any string and the trainer refuses an unknown one only at the first
# loss, after the models load (tests/test_params.py reads the list from TRL's own source)
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
PREFERENCE_METHODS = ("dpo", "simpo", "orpo", "kto")  # each an entry of ladder/preference.py's table
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")       # what TRL's KTOTrainer computes
DTYPES = ("float16", "bfloat16", "float32")
PARITY_DTYPES = ("float64", "float32")                 # merge's check: float64 measures the merge, not rounding
BNB_METHODS = ("int8", "nf4")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
JUDGE_HEADS = ("cls", "replies")
IDENTICAL_LABELS = ("each", "tie")
TIES = ("drop", "class")                               # arena ties: dropped, or a third label for the judge
BACKENDS = ("hf", "vllm")                              # inference's generation backend
CONTROLS = ("reference", "shuffled")                   # ladder.controls
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
    format: Literal[SOURCE_FORMATS]
    path: Annotated[str, Field(min_length=1)]


class HubSource(Section):
    """A hub dataset, pinned to a commit (`revision`; null until `python -m ladder.pin` writes one, and the fetch
    stage refuses it meanwhile), its files picked by `split` and, optionally, `files` globs."""
    format: Literal[SOURCE_FORMATS]
    hub: Annotated[str, Field(min_length=1)]
    revision: str | None
    split: str | None = None
    files: str | list[str] | None = None


class Fetch(Section):
    sources: dict[str, LocalSource]
    hub_sources: dict[str, HubSource]
    base_model: str
    base_revision: str | None
    judge_model: str
    judge_revision: str | None
    reward_model: str
    reward_revision: str | None
    seed: int

    @model_validator(mode="after")
    def one_kind_each(self) -> Fetch:
        both = sorted(set(self.sources) & set(self.hub_sources))
        if both:
            raise ValueError(f"source {both[0]!r} is both in sources (a local file) and in hub_sources")
        return self


def all_sources(fetch: dict) -> dict[str, dict]:
    """The `fetch` section's sources, local files first, then hub datasets: the order clean's dedup follows (the
    first source wins)."""
    return {**fetch["sources"], **fetch["hub_sources"]}


class Clean(Section):
    seed: int
    eval_fraction: Annotated[Real, Field(gt=0, lt=1)]
    min_turns: NonNegative
    min_message_chars: NonNegative
    max_message_chars: Positive
    min_conversation_chars: NonNegative
    max_conversation_chars: Positive
    sft_requires_thumbs_up: bool
    swipe_pairs: bool
    arena_languages: list[str]
    dedup: bool
    mix: dict[str, Annotated[Real, Field(ge=0)]]  # a float is a share (<= 1), an int a row count

    @field_validator("mix")
    @classmethod
    def shares_or_counts(cls, value: dict) -> dict:
        bad = {k: v for k, v in value.items() if isinstance(v, float) and v > 1}
        if bad:
            raise ValueError(f"a float is a share of the rows (at most 1.0), an int a row count: {bad}")
        return value


class Lora(Section):
    r: Positive
    alpha: Annotated[Real, Field(gt=0)]
    dropout: Share
    target_modules: list[str] | Literal["all-linear"]
    bias: Literal["none", "all", "lora_only"] | None = None  # absent: PEFT's own default (none)


class JudgeLora(Lora):
    layers: Positive | None = None  # the last N blocks only; None: every block


class ScoreFilter(Section):
    keep_top: Annotated[Real, Field(gt=0, le=1)] | None = None  # exactly one of the two, checked below
    min_score: Real | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> ScoreFilter:
        if (self.keep_top is None) == (self.min_score is None):
            raise ValueError("exactly one of keep_top (a share) or min_score")
        return self


class SelfPairs(Section):
    enabled: bool
    prompts: Positive
    samples: Annotated[int, Field(ge=2)]
    max_new_tokens: Positive
    temperature: Annotated[Real, Field(gt=0)]
    top_p: Annotated[Real, Field(gt=0, le=1)]
    top_k: NonNegative
    batch_size: Positive
    seed: int


class Reward(Section):
    objective: Literal[OBJECTIVES]
    max_length: Positive
    lora: Lora | None
    seed: int
    score_batch_size: Positive
    cpu_bf16: CpuBf16
    launcher: Launcher
    accelerate_config: str
    trainer: Trainer
    filter: ScoreFilter
    min_margin: Real
    self_pairs: SelfPairs


class Sft(Section):
    chat_template: str
    launcher: Launcher
    accelerate_config: str
    max_length: Positive
    learn_greeting: bool
    packing: bool
    cpu_bf16: CpuBf16
    eval_conversations: Positive | None
    seed: int
    lora: Lora
    trainer: Trainer

    @field_validator("chat_template")
    @classmethod
    def known_template(cls, value: str) -> str:
        names = sorted(p.stem for p in (Path(__file__).parent / "templates").glob("*.jinja"))
        if value != "base" and value not in names:
            raise ValueError(f"base (the model's own) or one of ladder/templates: {', '.join(names)}")
        return value


class Kto(Section):
    loss_type: Literal[KTO_LOSS_TYPES]
    desirable_weight: Annotated[Real, Field(gt=0)]
    undesirable_weight: Annotated[Real, Field(gt=0)]


class Dpo(Section):
    method: Literal[PREFERENCE_METHODS]
    loss_type: Literal[DPO_LOSS_TYPES]
    beta: Annotated[Real, Field(gt=0)]
    launcher: Launcher
    accelerate_config: str
    simpo_gamma: Real
    kto: Kto
    cpu_bf16: CpuBf16
    max_prompt_length: Positive
    max_length: Positive
    eval_pairs: Positive | None
    seed: int
    lora: Lora
    trainer: Trainer

    @model_validator(mode="after")
    def prompt_fits(self) -> Dpo:
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length "
                             f"({self.max_length}): the replies need room")
        return self


class Generation(Section):
    temperature: Annotated[Real, Field(gt=0)]
    top_p: Annotated[Real, Field(gt=0, le=1)]
    top_k: NonNegative
    max_new_tokens: Positive


class Merge(Section):
    dtype: Dtype
    parity_dtype: Literal[PARITY_DTYPES]
    parity_conversations: Positive
    generation: Generation


class Quantize(Section):
    formats: list[Literal[(*BNB_METHODS, "gguf")]]
    gguf_types: list[Literal[GGUF_TYPES]]
    dtype: Dtype
    nf4_compute_dtype: Dtype
    eval_conversations: Positive
    max_length: Positive
    generation_tokens: Positive


class FieldBudget(Section):
    prompt: Positive
    response: Positive


class Classifier(Section):
    preference_share: Share
    max_length: Positive
    field_budget: FieldBudget | None
    head: Literal[JUDGE_HEADS]
    head_dropout: Share
    ties: Literal[TIES]
    swap_augment: bool
    identical_pairs: Share
    identical_label: Literal[IDENTICAL_LABELS]
    rejected_ties: bool
    quantization: Literal[("none", *BNB_METHODS)]
    launcher: Launcher
    accelerate_config: str
    lora: JudgeLora | None
    seed: int
    cpu_bf16: CpuBf16
    eval_batch_size: Positive
    trainer: Trainer

    @model_validator(mode="after")
    def consistent(self) -> Classifier:
        if self.quantization != "none" and self.lora is None:
            raise ValueError(f"quantization {self.quantization} needs lora: a quantized backbone cannot be "
                             f"fine-tuned whole")
        return self


class Sampling(Generation):
    stop: list[str]
    max_input_tokens: Positive


class Inference(Section):
    models: Annotated[list[str], Field(min_length=1)]
    n_prompts: Positive
    seed: int
    controls: list[Literal[CONTROLS]]
    backend: Literal[BACKENDS]
    sampling: Sampling
    best_of: Positive
    batch_size: Positive

    @field_validator("models", "controls")
    @classmethod
    def once_each(cls, value: list) -> list:
        if len(set(value)) < len(value):
            raise ValueError(f"each at most once: {value}")
        return value

    @field_validator("models")
    @classmethod
    def known_models(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in CHAT_MODELS]
        if unknown:
            raise ValueError(f"unknown {unknown}; known: {', '.join(CHAT_MODELS)}")
        return value


class Validity(Section):
    max_identical_bias: Share
    max_flip_rate: Share
    min_control_separation: Share
    min_judge_reward_agreement: Share
    max_length_shift: Annotated[Real, Field(ge=0)]


class Metrics(Section):
    anchor: str
    anchor_rating: Real
    bootstrap: NonNegative
    seed: int
    validity: Validity


class Tolerance(Section):
    absolute: Annotated[Real, Field(ge=0)]
    relative: Annotated[Real, Field(ge=0)]


class Review(Section):
    examples: NonNegative
    tolerance: Tolerance


class Params(Section):
    fetch: Fetch
    clean: Clean
    reward: Reward
    sft: Sft
    dpo: Dpo
    merge: Merge
    quantize: Quantize
    classifier: Classifier
    inference: Inference
    metrics: Metrics
    review: Review


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
