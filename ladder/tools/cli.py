"""The `ladder` command: the project's tools under one name (pyproject.toml [project.scripts]).

    ladder review main          # the pull-request review (python -m ladder.tools.review)
    ladder timings --diff main  # the timing files (python -m ladder.tools.timings)
    ladder recipe chai wsdm     # recipes merged into params.yaml in order (python -m ladder.tools.recipes)
    ladder pin                  # hub entries pinned to commits (python -m ladder.tools.pin)
    ladder launch sft           # a training stage, as dvc.yaml starts it (python -m ladder.launch)
    ladder env                  # versions, CPU features, CUDA devices and each stage's hardware choice

Each subcommand is the click command its module defines (its `python -m` entry runs the same one); only `env`
lives here. Heavy libraries (torch, transformers, trl, dvc) are imported inside functions, so `ladder --help`
starts at once.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path

import click

from ladder import launch

from ladder.tools import pin, recipes, review, timings

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "huggingface-hub",
            "dvc")
# x86 flags (Linux /proc/cpuinfo names) behind the CPU code paths: oneDNN and bitsandbytes' CPU kernels pick their
# AVX2 / AVX-512 / VNNI paths by them, and bfloat16 autocast is native only with AVX512-BF16 or AMX
CPU_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8")
# the stages whose @stage(...) passes hardware=stage_hardware (tests/test_cli.py checks this against stages/)
MODEL_STAGES = ("reward", "sft", "dpo", "classifier", "inference", "quantize")


class LadderGroup(click.Group):
    """The group whose usage errors (a bad argument, an unknown subcommand) are one line: Click prints the usage,
    a hint and a blank line before the error."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            raise one_line(error) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise one_line(error) from None


def one_line(error: click.UsageError) -> click.UsageError:
    """`error` as a usage error without its context, which Click shows as the single line `Error: ...`."""
    message = error.format_message().rstrip(".") + "."
    where = f" See `{error.ctx.command_path} --help`." if error.ctx is not None else ""
    plain = click.UsageError(f"{message}{where}")
    plain.exit_code = error.exit_code
    return plain


@click.group("ladder", cls=LadderGroup, context_settings={"max_content_width": 120})
def main() -> None:
    """ladder: the post-training pipeline's tools (the stages themselves run through `dvc repro`).

    Each command also runs as `python -m ladder.tools.<module>` (review, timings, recipes, pin) or `python -m
    ladder.launch`; `ladder env` shows the versions and hardware to attach to a bug report.
    """


# ------------------------------------------------------------------------------------------------ env
def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version per distribution name, read from its metadata (nothing is imported)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's model name and its flags, from the first processor of `cpuinfo` (empty where it cannot be read:
    not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return (model.group(1).strip() if model else platform.machine()), set(flags.group(1).split() if flags else ())


def cpu_lines(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The CPU, its cores, the CPU_FEATURES it has and lacks, and the bfloat16 sets the stages look for."""
    from ladder.training.trainer import cpu_bf16_flags

    model, flags = cpu_description(cpuinfo)
    has = [f for f in CPU_FEATURES if f in flags]
    lacks = [f for f in CPU_FEATURES if f not in flags]
    bf16 = cpu_bf16_flags(cpuinfo)
    return [f"cpu: {model} ({os.cpu_count()} logical cores, {len(os.sched_getaffinity(0))} usable)"
            if hasattr(os, "sched_getaffinity") else f"cpu: {model} ({os.cpu_count()} logical cores)",
            f"cpu features: {' '.join(has) or 'none of ' + ' '.join(CPU_FEATURES)}",
            f"cpu features absent: {' '.join(lacks) or 'none'}",
            f"native bfloat16 (cpu_bf16: auto takes it): {', '.join(bf16) if bf16 else 'no'}"]


def cuda_lines() -> list[str]:
    """torch's CUDA build and each visible device with its compute capability and memory."""
    import torch

    if not torch.cuda.is_available():
        return [f"cuda: none (torch built with CUDA {torch.version.cuda or 'no'})"]
    lines = [f"cuda: {torch.cuda.device_count()} device(s), torch built with CUDA {torch.version.cuda}"]
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        lines.append(f"  cuda:{index} {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.1f} GiB")
    return lines


def stage_choice(stage: str, section: dict) -> str:
    """What `stage` would run on, by ladder.training.trainer.stage_hardware (the call ladder.stage makes before the stage's
    body), with the reason of its CPU bfloat16 autocast choice."""
    from ladder.training.trainer import attn_implementation, compute_dtype, cpu_autocast, device_name, stage_hardware

    hw = stage_hardware(stage, section)
    choice = f"{stage}: {device_name(hw['cuda'])} ({hw['device']}), {compute_dtype(hw['bf16'])} weights, " \
             f"attention {attn_implementation(hw)}"
    if "cpu_bf16" in hw:
        why = cpu_autocast(section["cpu_bf16"], hw)[1]
        choice += f", bfloat16 autocast on the CPU {'on' if hw['cpu_bf16'] else 'off'} ({why})"
    return choice


def stage_lines(params_file: str) -> list[str]:
    """One line per MODEL_STAGES stage: its hardware choice under `params_file`, or why it cannot be read."""
    from ladder.errors import InputError
    from ladder.params import load_params

    try:
        params = load_params(params_file)
    except InputError as error:
        return [f"stage choices: not read ({error})"]
    return ["stage choices:", *(f"  {stage_choice(stage, params[stage])}" for stage in MODEL_STAGES
                                if stage in params)]


def environment(params_file: str = "params.yaml") -> str:
    """The report `ladder env` prints: versions, CPU, CUDA devices and the stages' hardware choices."""
    lines = [f"python: {platform.python_version()} ({platform.platform()})",
             *(f"{name}: {version}" for name, version in package_versions().items()),
             *cpu_lines(), *cuda_lines(), *stage_lines(params_file)]
    return "\n".join(lines) + "\n"


@main.command("env", short_help="Versions, CPU features, CUDA devices and the stages' hardware.")
@click.option("--params", "params_file", default="params.yaml", show_default=True,
              help="the params file whose cpu_bf16 choices the stages would take")
def env(params_file: str) -> None:
    """Versions, CPU features, CUDA devices and each stage's hardware choice (for bug reports)."""
    click.echo(environment(params_file), nl=False)


for module in (review, timings, recipes, pin, launch):
    main.add_command(module.main)


if __name__ == "__main__":
    main()
