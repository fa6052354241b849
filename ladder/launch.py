"""Start a training stage in one process or under `accelerate launch`, as its params say.

    python -m ladder.launch sft [--params params.yaml]

Params of the stage (reward, sft, dpo, classifier):
    launcher: python                                  # one process
    launcher: accelerate                              # accelerate launch --config_file <accelerate_config>
    accelerate_config: configs/accelerate/ddp.yaml    # ddp, fsdp, zero3 (GPUs) or cpu (2 gloo processes)

accelerate starts several CPU processes (distributed_type MULTI_CPU) only through mpirun; where there is
no mpirun, they are started with torchrun (what accelerate uses for GPUs) and transformers is told to stay
on the CPU (ACCELERATE_USE_CPU), which gives the same gloo process group. Only rank 0 writes outputs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ladder.errors import InputError

TRAINING_STAGES = ("reward", "sft", "dpo", "classifier")
SHARDABLE = ("sft", "dpo")  # they gather sharded LoRA weights before saving; the others save whole models


def accelerate_settings(config_file: str | Path) -> dict:
    """The accelerate config file, checked by accelerate's own loader (which names a missing file)."""
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(config_file)).to_dict()


def command(stage: str, params: dict, params_file: str) -> tuple[list[str], dict[str, str]]:
    """The command line and the extra environment that run `stage` as `params` (its section, checked by
    ladder/params.py: `launcher` is one of LAUNCHERS) ask."""
    if stage not in TRAINING_STAGES:
        raise InputError(f"{stage!r} is not a training stage; one of {', '.join(TRAINING_STAGES)}")
    script = ["-m", f"stages.{stage}", "--params", params_file]
    if params["launcher"] == "python":
        return [sys.executable, *script], {}
    config = params["accelerate_config"]
    if not config:
        raise InputError(f"{stage}.launcher is accelerate but {stage}.accelerate_config is not set")
    settings = accelerate_settings(config)
    if settings.get("distributed_type") in ("FSDP", "DEEPSPEED") and stage not in SHARDABLE:
        raise InputError(f"{stage} runs data-parallel only (configs/accelerate/ddp.yaml or cpu.yaml), not "
                         f"{settings['distributed_type']} ({config}): its weights are saved whole, and an 8-bit "
                         f"backbone cannot be sharded")
    processes = int(settings.get("num_processes") or 1)
    if settings.get("distributed_type") == "MULTI_CPU" and processes > 1 and not shutil.which("mpirun"):
        return ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                 *script], {"ACCELERATE_USE_CPU": "true"})
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *script], {}


def main(argv: list[str]) -> int:
    from ladder.params import section

    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--params"):
        print("usage: python -m ladder.launch <stage> [--params params.yaml]", file=sys.stderr)
        return 2
    params_file = argv[2] if len(argv) == 3 else "params.yaml"
    try:  # as ladder/stage.py does for the stages: a bad param or a missing config file is one line
        cmd, env = command(argv[0], section(argv[0], params_file), params_file)
    except (InputError, FileNotFoundError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    shown = ["python", *cmd[1:]] if cmd[0] == sys.executable else cmd
    print("ladder.launch:", " ".join(f"{k}={v}" for k, v in env.items()), *shown, flush=True)
    return subprocess.run(cmd, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
