"""The one entry every stage's command goes through.

    @stage("sft", hardware=stage_hardware)        # ladder.training.trainer.stage_hardware
    def main(params: dict, hw: dict) -> None: ...

gives the stage a `--params FILE` option and, before its body runs: logging, params.yaml read and checked
against its schemas (ladder.params), with `trainer` the section's `trainer` params checked against the trainer's
config class (ladder.training.trainer.trainer_check), the temporaries of killed runs swept (ladder.io.sweep_stale), and with
`hardware` the device choice logged with the process's rank and the section's cpu_bf16 choice
(ladder.training.trainer.stage_hardware). The body runs inside ladder.io.stage_outputs: its outputs replace the previous
ones together when it ends, or not at all. An InputError (a missing file or column, a bad param, an unreadable
input, a full disk or a read-only folder) or a missing file ends the stage with one line and exit status 1; any
other error is a bug and keeps its traceback. `--help` prints the stage module's docstring as written.
"""
from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path
from typing import Callable

import click

from ladder.errors import InputError


class StageCommand(click.Command):
    """A command whose help is its text line by line: Click rewraps paragraphs, which runs the docstrings'
    Reads / Writes columns and usage lines together."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        for line in inspect.cleandoc(self.help or "").splitlines():
            formatter.write(f"{'':{formatter.current_indent + 2}}{line}\n" if line.strip() else "\n")


def declared_inputs(name: str, dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The deps dvc.yaml declares for stage `name`, code included (benchmarks/throughput.py copies a stage's inputs by
    them); none where there is no dvc.yaml or the stage is a foreach template (its deps are templated)."""
    if not dvc_yaml.is_file():
        return []
    from ruamel.yaml import YAML

    body = (YAML(typ="safe", pure=True).load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {}).get(name)
    if not body or "do" in body:
        return []
    return [d for d in body.get("deps", []) if isinstance(d, str) and "${" not in d]


def stage(name: str, hardware: Callable[[str, dict], dict] | None = None, section: str | None = None,
          trainer: Callable[[dict, str, str], None] | None = None,
          inputs: Callable[[dict], None] | None = None) -> Callable:
    """Make `fn(params, [hw,] **options)` stage `name`'s Click command (see the module docstring). `hardware`:
    ladder.training.trainer.stage_hardware for a stage that loads models, and `trainer`: ladder.training.trainer.trainer_check(...)
    for one that trains (passed in, not imported here, so that stages without models do not depend on the
    training module); `section`: the params section whose cpu_bf16 and trainer apply (default: `name`); `inputs`:
    the check of the stage's input tables (columns, rows) that `--check` runs (the body runs it, or its parts, itself).
    Click options go below this decorator. `--check` checks the params, the trainer params and the inputs and
    stops: ladder.launch runs it once before it starts several processes, each of which would print its own
    error, followed by the launcher's traceback."""

    def wrap(fn: Callable) -> click.Command:
        def run(params_file: str, check: bool, **options) -> None:
            from ladder import paths
            from ladder.io import is_main_process, stage_outputs, sweep_stale, system_cause
            from ladder.params import load_params

            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            # On an AVX512-BF16 CPU, importing bitsandbytes tries to fetch a 4-bit kernel from the hub with the
            # optional `kernels` package and warns when it cannot; it then uses the bf16 kernel of its own library.
            # The warning is noise before a stage's one-line error, and the project fetches nothing at import.
            logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
            log = logging.getLogger(f"ladder.{name}")
            try:
                params = load_params(params_file)
                if trainer:
                    trainer(params[section or name], section or name, params_file)
                if check:
                    if inputs:
                        inputs(params)
                    return None
                for path in sweep_stale(paths.OUTPUT_FOLDERS) if is_main_process() else []:
                    log.info("removed %s, left by a run that was killed", path)
                if hardware:
                    options["hw"] = hardware(name, params[section or name])
                with stage_outputs():
                    return fn(params, **options)
            except InputError as error:
                raise click.ClickException(str(error)) from None
            except FileNotFoundError as error:
                raise click.ClickException(f"missing file: {error.filename or error}") from None
            except Exception as error:  # the machine's refusal (no space, read-only) is one line; anything else a bug
                # (the trainer writes checkpoints itself: torch and safetensors raise their own errors for a full disk)
                cause = system_cause(error, Path("."))
                if not cause:
                    raise
                where = getattr(error, "filename", None) or f"a file under {Path.cwd()}"
                raise click.ClickException(f"{where}: {cause}") from None

        run.__click_params__ = list(getattr(fn, "__click_params__", []))
        run.__doc__ = fn.__doc__
        command = click.command(name, cls=StageCommand, help=sys.modules[fn.__module__].__doc__)(run)
        command = click.option("--check", is_flag=True, help="check the params and the inputs, then stop")(command)
        return click.option("--params", "params_file", default="params.yaml", show_default=True,
                            help="params file (checked against ladder/params.py first)")(command)

    return wrap
