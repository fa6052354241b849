"""Start a training stage in one process or under `accelerate launch`, as its params say.

    python -m ladder.launch sft [--params params.yaml]
    ladder launch sft [--params params.yaml]            # the same

Params of the stage (reward, sft, dpo, classifier):
    launcher: python                                  # one process
    launcher: accelerate                              # accelerate launch --config_file <accelerate_config>
    accelerate_config: configs/accelerate/ddp.yaml    # ddp, fsdp, zero3 (GPUs) or cpu (2 gloo processes)

accelerate starts several CPU processes (distributed_type MULTI_CPU) only through mpirun; where there is
no mpirun, they are started with torchrun (what accelerate uses for GPUs) and transformers is told to stay
on the CPU (ACCELERATE_USE_CPU), which gives the same gloo process group. Only rank 0 writes outputs.

Under accelerate the stage first checks its params, trainer params and inputs alone (`--check`), so that a bad
value is one line rather than one per process and a traceback. The stage runs as a child process: the signals
sent to this one (Ctrl-C, a scheduler's SIGTERM) are passed on to it, the child is ended if this process is
killed outright, and the exit status is the child's (128 + N when signal N ended it).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from ladder.errors import InputError
from ladder.stage import StageCommand

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


def launch(stage: str, params_file: str = "params.yaml") -> int:
    """Run training stage `stage` as its params in `params_file` say (see the module docstring); the exit status
    is the stage's. A bad param, stage name or accelerate config is one line on stderr and status 1."""
    from ladder.params import section

    try:  # as ladder/stage.py does for the stages: a bad param or a missing config file is one line
        if stage not in TRAINING_STAGES:  # before its params section, which a non-training name may lack
            raise InputError(f"{stage!r} is not a training stage; one of {', '.join(TRAINING_STAGES)}")
        cmd, env = command(stage, section(stage, params_file), params_file)
    except (InputError, FileNotFoundError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    if cmd[0] != sys.executable or cmd[1:3] != ["-m", f"stages.{stage}"]:
        # several processes would each print the stage's one-line error, then the launcher its traceback: the
        # stage checks its params, trainer params and inputs once, alone, first
        checked = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params", params_file, "--check"])
        if checked.returncode:
            return checked.returncode
    shown = ["python", *cmd[1:]] if cmd[0] == sys.executable else cmd
    print("ladder.launch:", " ".join(f"{k}={v}" for k, v in env.items()), *shown, flush=True)
    return run_child(cmd, {**os.environ, **env})


# The stage takes nothing but its params file, so the command line is exactly `<stage> [--params FILE]`
@click.command("launch", cls=StageCommand, help=__doc__,
               short_help="Start a training stage in one process or under accelerate launch.")
@click.argument("stage")
@click.option("--params", "params_file", default="params.yaml", show_default=True, help="the params file")
@click.pass_context
def main(ctx: click.Context, stage: str, params_file: str) -> None:
    ctx.exit(launch(stage, params_file))


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _die_with_parent() -> None:
    """In the child, before it runs: the kernel sends it SIGTERM when this process dies, however it dies (a SIGKILL
    cannot be forwarded), so a killed launch never leaves a stage training on as an orphan."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run `cmd`, passing the signals a user or a scheduler sends (FORWARDED) on to it, and return the status a
    shell would report for it: its exit code, or 128 + the signal that ended it. The child gets its own process
    group, so that a Ctrl-C in the terminal reaches it once, through this process, not twice."""
    child: subprocess.Popen | None = None
    early: list[int] = []  # signals that came before the child existed

    def forward(number: int, _frame) -> None:
        if child is None:
            early.append(number)
        else:
            child.send_signal(number)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        child = subprocess.Popen(cmd, env=env, process_group=0,
                                 preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        for number in early:
            child.send_signal(number)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    main()
