"""What the training stages share: hardware choices, trainer arguments, dvclive logging, timings.

Training curves go through dvclive, one `Live` per stage in dvclive/<stage>, rank 0 only, never
`report_to="dvclive"` (it makes a default Live that rewrites dvc.yaml). Only figures that are the same
on every CPU rerun reach dvclive and metrics/*.json; wall time and throughput go to
metrics/timings/<stage>.json.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable

from ladder.io import is_main_process, process_rank
from ladder.lazy import lazy_classes
from ladder.params import CPU_BF16_CHOICES

log = logging.getLogger("ladder.training.trainer")
TIMING_WORDS = ("runtime", "per_second", "flos", "_time")
# x86 flags (Linux /proc/cpuinfo names) of native bfloat16 dot products; without them oneDNN emulates
# bfloat16 and autocast runs slower than float32
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def hardware() -> dict[str, Any]:
    """The accelerator facts the stages choose by (logged by each stage)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"cuda": cuda, "bf16": cuda and torch.cuda.is_bf16_supported(),
            "flash_attn": cuda and importlib.util.find_spec("flash_attn") is not None,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu"}


def compute_dtype(bf16: bool) -> str:
    """The dtype models compute in: bfloat16 where the GPU has it (hw["bf16"]), else float32."""
    return "bfloat16" if bf16 else "float32"


def torch_dtype(bf16: bool):
    import torch

    return getattr(torch, compute_dtype(bf16))


def device_name(cuda: bool) -> str:
    return "cuda" if cuda else "cpu"


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The CPU's native bfloat16 instruction sets named in `cpuinfo` (none where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in CPU_BF16_FLAGS if f in flags]


def cpu_autocast(choice: str | bool, hw: dict, flags: list[str] | None = None) -> tuple[bool, str]:
    """Whether a trainer on the CPU runs under bfloat16 autocast (float32 master weights), and why.
    `auto` takes it where the CPU has native bfloat16 (AVX512-BF16 or AMX), `on` everywhere, `off` never.
    On CUDA it is never taken: the GPU's own choice (hw["bf16"]) stands."""
    if isinstance(choice, bool):  # a YAML 1.1 reader (PyYAML, some -S paths) turns on / off into booleans
        choice = "on" if choice else "off"
    if choice not in CPU_BF16_CHOICES:
        raise ValueError(f"cpu_bf16 must be one of {', '.join(CPU_BF16_CHOICES)}, not {choice!r}")
    if hw["cuda"]:
        return False, "not on CUDA (the GPU's bf16 choice applies)"
    if choice != "auto":
        return choice == "on", f"cpu_bf16: {choice}"
    flags = cpu_bf16_flags() if flags is None else flags
    return (True, f"the CPU has {', '.join(flags)}") if flags else (False, "the CPU has no native bfloat16")


def with_cpu_autocast(hw: dict, choice: str | bool, stage: str) -> dict:
    """`hw` with the stage's cpu_bf16 choice made (hw["cpu_bf16"]) and logged with its reason."""
    try:
        on, why = cpu_autocast(choice, hw)
    except ValueError as error:
        raise ValueError(f"{stage}.{error}") from None
    logging.getLogger(f"ladder.{stage}").info("bfloat16 autocast on the CPU: %s (%s)", "on" if on else "off", why)
    return {**hw, "cpu_bf16": on}


def progress(iterable, desc: str, unit: str, show: bool = True):
    """`iterable` behind a tqdm bar on stderr, for the long loops that log nothing meanwhile (generation,
    reward scoring, judging). Main process only: every rank of a distributed run would draw its own bar over the
    others'. `show=False` leaves the loop silent, for callers whose loop is too short to need one."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, disable=not (show and is_main_process()))


def stage_hardware(stage: str, params: dict) -> dict:
    """The hardware `stage` will use, with its params section's cpu_bf16 choice, logged with this process's
    rank (ladder.stage calls it for the stages that load models)."""
    hw = hardware()
    logging.getLogger(f"ladder.{stage}").info("hardware: %s; attention %s; process %d of %d", hw,
                                              attn_implementation(hw), *process_rank())
    return with_cpu_autocast(hw, params["cpu_bf16"], stage) if "cpu_bf16" in params else hw


def attn_implementation(hw: dict) -> str:
    return "flash_attention_2" if hw["flash_attn"] else "sdpa"


def causal_lm_settings(hw: dict) -> dict:
    """from_pretrained's arguments for a chat model in training: bf16 with flash-attention 2 on a GPU that has them,
    else fp32 and sdpa."""
    return {"dtype": torch_dtype(hw["bf16"]), "attn_implementation": attn_implementation(hw)}


def load_causal_lm(path, hw: dict):
    """A chat model for training (causal_lm_settings)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **causal_lm_settings(hw))


def lora_config(lora: dict, task_type: str | None = None, **extra):
    """PEFT's LoraConfig from a params `lora` section (r, alpha, dropout, target_modules, and bias if given);
    `extra` for what only one caller sets (the judge's layers_to_transform)."""
    from peft import LoraConfig

    return LoraConfig(task_type=task_type, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=lora["target_modules"], **({"bias": lora["bias"]} if "bias" in lora else {}),
                      **extra)


def compact_fused_head() -> bool:
    """Make TRL's fused LM head project only the labelled positions on a CPU, as it already does on CUDA.

    TRL 1.x scores every position on devices without Triton, to keep tile shapes fixed for graph compilers
    (Neuron); eager CPU code has no compiler to please, and the prompt positions' vocabulary-wide projections,
    entropies and backward recomputations cost a third of DPO's step time here (train tokens/s 119 -> 184 without
    them; SFT 156 -> 316).
    The log-probabilities are the same either way (tests/test_dpo.py). CUDA keeps TRL's own choice. Returns
    whether the switch exists in this TRL (False: nothing changed)."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "compact_on_cpu", False):
        return original is not None

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    compact.compact_on_cpu, compact.original = True, original
    trl_utils._use_triton = compact  # read by trl.trainer.utils' fused forward alone (the kernels keep their own)
    return True


# Domains TrainingArguments documents but its annotations do not carry (a float `logging_steps` or `warmup_steps`
# below 1 is a share of the steps). A value outside them trains something else silently (max_steps -5 trained 3
# epochs) or fails deep in torch after the models load.
_POSITIVE = (lambda v: v > 0, "greater than 0")
_AT_LEAST_0 = (lambda v: v >= 0, "at least 0")
_BELOW_1 = (lambda v: 0 <= v < 1, "at least 0 and below 1")
TRAINER_RANGES = {
    "learning_rate": _POSITIVE, "num_train_epochs": _POSITIVE,
    "max_steps": (lambda v: v == -1 or v > 0, "-1 (train num_train_epochs) or greater than 0"),
    "per_device_train_batch_size": _POSITIVE, "per_device_eval_batch_size": _POSITIVE,
    "gradient_accumulation_steps": _POSITIVE, "eval_accumulation_steps": _POSITIVE,
    "warmup_steps": _AT_LEAST_0, "weight_decay": _AT_LEAST_0, "max_grad_norm": _AT_LEAST_0,
    "adam_beta1": _BELOW_1, "adam_beta2": _BELOW_1, "adam_epsilon": _POSITIVE, "label_smoothing_factor": _BELOW_1,
    "logging_steps": _POSITIVE, "eval_steps": _POSITIVE, "save_steps": _POSITIVE, "save_total_limit": _POSITIVE,
    "seed": _AT_LEAST_0, "data_seed": _AT_LEAST_0, "dataloader_num_workers": _AT_LEAST_0,
}


def _fits(value: Any, annotation: Any) -> bool | str:
    """Whether `value` (as YAML gave it) fits a config field's annotation: True, False, or the allowed values of
    an enum or Literal it misses. A string beside an enum (`SchedulerType | str`) must be one of the enum's
    values; an annotation this does not know (a callable, a class) is left to the config class."""
    import enum
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            choices = [str(e.value) for a in enums for e in a]
            return True if value in choices else ", ".join(choices)
        results = [_fits(value, a) for a in args if a is not type(None)]
        return True if True in results else next((r for r in results if isinstance(r, str)), False)
    if origin is typing.Literal:
        return True if value in args else ", ".join(map(str, args))
    if value is None:
        return False
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, list):  # a single value where a list is asked: TRL's configs wrap it themselves
            return bool(args) and _fits(value, args[0]) is True
        return not args or all(_fits(v, args[0]) is True for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        choices = [str(e.value) for e in annotation]
        return True if value in choices else ", ".join(choices)
    return True


def trainer_check(config_class: str | Callable[[dict], type]) -> Callable[[dict, str, str], None]:
    """What ladder.stage runs on a training stage's params section before anything else: check_trainer against
    `config_class`, given as "module:Class" or as a function of the section (dpo's depends on its method)."""
    def check(params: dict, section: str, source: str) -> None:
        if isinstance(config_class, str):
            import importlib

            module, _, name = config_class.partition(":")
            cls = getattr(importlib.import_module(module), name)
        else:
            cls = config_class(params)
        check_trainer(params["trainer"], cls, section, source)

    return check


def check_trainer(trainer_params: dict, config_class, section: str, source: str = "params.yaml") -> None:
    """Stop on a `trainer` key that `config_class` (TrainingArguments or a TRL config) does not have, on a value
    of the wrong type for its field, or outside TRAINER_RANGES, with one line naming `source` (the params file),
    the key, the value as written and what is allowed, before any model loads: the class itself takes any value
    of any type, and a wrong one fails, if at all, in the middle of training."""
    import dataclasses
    import typing

    from ladder.errors import InputError
    from ladder.params import kind

    fields = {f.name for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    for key, value in trainer_params.items():
        where = f"{source}: {section}.trainer.{key}"
        if key not in fields:
            raise InputError(f"{where}: unknown key; {section}.trainer passes through to {config_class.__name__}, "
                             f"which has no such argument")
        fits = _fits(value, hints.get(key, Any))
        if fits is not True:
            wanted = f"one of {fits}" if isinstance(fits, str) else _type_words(hints[key])
            raise InputError(f"{where} = {value!r}: {config_class.__name__}.{key} takes {wanted}, not {kind(value)}")
        check, allowed = TRAINER_RANGES.get(key, (None, ""))
        if check and value is not None and not check(value):
            raise InputError(f"{where} = {value!r}: must be {allowed}")


def _type_words(annotation: Any) -> str:
    """An annotation in words: `float | None` -> "a number or null"."""
    import types
    import typing

    words = {bool: "a boolean", int: "an integer", float: "a number", str: "text", dict: "a mapping",
             list: "a list", type(None): "null"}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_words(a) for a in typing.get_args(annotation)))
    return words.get(typing.get_origin(annotation) or annotation, getattr(annotation, "__name__", str(annotation)))


def trainer_arguments(trainer_params: dict, output_dir: str, seed: int, hw: dict, optim_gpu: str | None = None,
                      optim_cpu: str = "adamw_torch_fused") -> dict[str, Any]:
    """Keyword arguments for a transformers / TRL config: the stage's `trainer` params passed through,
    plus what the hardware decides (bf16, optimizer) unless params set it, and what keeps outputs clean.
    hw["cpu_bf16"] (set by with_cpu_autocast) trains on the CPU under bfloat16 autocast (transformers asks for
    use_cpu to take bf16 without a GPU). On a CPU, AdamW is torch's fused kernel: the same update as the
    default multi-tensor one in one pass over memory, 0.013 s a step against 0.065 s on the judge's 22.7M weights
    (2 cores), a seventh of each classifier step."""
    args = {"output_dir": output_dir, "seed": seed, "data_seed": seed, "report_to": "none",
            "save_strategy": "no", "logging_steps": 10, "disable_tqdm": True, "dataloader_num_workers": 0,
            "optim": (optim_gpu or "adamw_torch") if hw["cuda"] else optim_cpu,
            "bf16": hw["bf16"]}  # explicit: TRL's configs default to bf16, which a CPU cannot run
    if hw.get("cpu_bf16") and not hw["cuda"]:
        args.update(bf16=True, use_cpu=True)
    args.update(trainer_params or {})
    return args


def gathered_state_dict(trainer):
    """The whole model's weights when FSDP or DeepSpeed ZeRO-3 shards them across processes, gathered the
    way the trainer's own save_model does it; every process must call this. None when nothing is sharded."""
    if trainer.is_deepspeed_enabled:
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.is_fsdp_enabled:
        return trainer.accelerator.get_state_dict(trainer.model)
    return None


def save_adapter(model, folder, state_dict=None) -> None:
    """Save a PEFT adapter with a byte-stable adapter_config.json: PEFT keeps target_modules as a set, whose
    order changes from one Python process to the next. `state_dict`: from gathered_state_dict."""
    import json
    from pathlib import Path

    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def logged_train_loss(state) -> float:
    """The mean of the logged training losses. Unlike the trainer's own figure, it covers the whole run
    when the run was resumed from a checkpoint (the log history is restored with it)."""
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    return sum(losses) / len(losses) if losses else float("nan")


def is_timing(key: str) -> bool:
    return any(word in key for word in TIMING_WORDS)


def split_timings(metrics: dict) -> tuple[dict, dict]:
    """(figures that reproduce, figures that vary from run to run)."""
    stable = {k: v for k, v in metrics.items() if not is_timing(k)}
    return stable, {k: v for k, v in metrics.items() if is_timing(k)}


class TokenCount:
    """A trainer's collator, counting the tokens it batches: `real` ones (attention mask) and `padded` (the
    tensor's size). Throughput is quoted on real tokens; 1 - real / padded is the share of padding the steps paid for."""

    def __init__(self, collator):
        self.collator, self.real, self.padded = collator, 0, 0

    def __call__(self, features):
        batch = self.collator(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")  # padding-free batches have none: every token is real
        self.padded += ids.numel()
        self.real += int(mask.sum()) if mask is not None else ids.numel()
        return batch


def count_tokens(trainer) -> TokenCount:
    """Wrap `trainer`'s collator in a TokenCount (the data loaders read trainer.data_collator when they are built)."""
    trainer.data_collator = counter = TokenCount(trainer.data_collator)
    return counter


def token_timings(counter: TokenCount, seconds: float, processes: int = 1) -> dict:
    """Train tokens and tokens/s (real tokens, every process assumed alike), and the share of padding."""
    real, padded = counter.real * processes, counter.padded * processes
    return {"train_tokens": real, "train_tokens_per_second": round(real / seconds, 1),
            "train_padding_share": round(1 - real / padded, 4) if padded else 0.0}


@functools.cache
def _callbacks() -> dict[str, type]:
    """LiveCallback and StopAfter, defined on first use: they subclass transformers' callbacks, and importing
    transformers with this module would make every stage's --help wait for it. Reach them as
    ladder.training.trainer.LiveCallback / StopAfter."""
    from transformers import TrainerCallback
    from transformers.integrations import DVCLiveCallback

    class LiveCallback(DVCLiveCallback):
        """transformers' DVCLiveCallback, minus what would make dvclive files differ between identical runs:
        it logs the stage's own params rather than TrainingArguments (paths, hosts), and keeps run times and
        throughput out of the curves (they go to the timing file through `timings`)."""

        def __init__(self, stage: str, params: dict | None = None):
            from dvclive import Live

            from ladder.io import staged_folder
            from ladder.paths import DVCLIVE

            # Live() empties its folder when it starts: it gets a new one that replaces dvclive/<stage> with the
            # stage's other outputs (the curves of the last complete run stay until then); made on the main process
            # only (the parent class touches `live` on world process zero only)
            live = (Live(str(staged_folder(DVCLIVE / stage)), dvcyaml=False, save_dvc_exp=False)
                    if is_main_process() else None)
            super().__init__(live=live)
            self.params = params or {}
            self.timings: dict[str, float] = {}

        def setup(self, args, state, model):
            self._initialized = True
            if state.is_world_process_zero:
                self.live.log_params(self.params)

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            logs = dict(logs or {})
            self.timings.update({k: v for k, v in logs.items() if is_timing(k)})
            super().on_log(args, state, control, model=model, logs={k: v for k, v in logs.items() if not is_timing(k)},
                           **kwargs)

    class StopAfter(TrainerCallback):
        """Stop training after `steps` optimizer steps (the resume test kills a run part way this way)."""

        def __init__(self, steps: int):
            self.steps = steps

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= self.steps:
                control.should_training_stop = True
            return control

    for cls in (LiveCallback, StopAfter):
        cls.__qualname__ = cls.__name__
    return {"LiveCallback": LiveCallback, "StopAfter": StopAfter}


__getattr__ = lazy_classes(__name__, ("LiveCallback", "StopAfter"), _callbacks)
