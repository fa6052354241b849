"""The `ladder` command (ladder/tools/cli.py) and the tools' own `python -m ladder.<module>` entries: each answers --help,
recipes compose in order, expected errors are one line without a traceback, and `ladder env` reports versions,
CPU features and the stages' hardware choices. Fast: no model is loaded."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ladder.tools.cli import CPU_FEATURES, MODEL_STAGES, cpu_lines, main
from ladder.params import read_yaml

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("review", "timings", "recipe", "pin", "launch", "env")
MODULES = ("tools.review", "tools.timings", "tools.recipes", "tools.pin", "launch", "tools.cli")


def ladder(*args: str, cwd: Path | None = None):
    """`ladder ARGS` through Click's runner, in `cwd` when given."""
    if cwd is None:
        return CliRunner().invoke(main, list(args))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(main, list(args))


def python_m(module: str, *args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    """`python -m ladder.<module> ARGS` in a process of its own, the repository importable from `cwd`."""
    return subprocess.run([sys.executable, "-m", f"ladder.{module}", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=120)


def one_error_line(text: str) -> str:
    """The single line `text` holds, checked to be one and no traceback."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_ladder_help_lists_every_subcommand():
    done = ladder("--help")
    assert done.exit_code == 0 and done.output.startswith("Usage: ladder")
    listed = done.output.split("Commands:")[1]
    assert all(re.search(rf"^  {name}\s", listed, re.MULTILINE) for name in SUBCOMMANDS), done.output


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_answers_help(name):
    done = ladder(name, "--help")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Usage: ladder {name} ")


@pytest.mark.parametrize("module", MODULES)
def test_every_module_entry_answers_help(module):
    done = python_m(module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: python -m ladder.{module} "), done.stdout


def test_the_module_entry_and_the_subcommand_are_one_command():
    from ladder import launch
    from ladder.tools import pin, recipes, review, timings

    for name, module in [("review", review), ("timings", timings), ("recipe", recipes), ("pin", pin),
                         ("launch", launch)]:
        assert main.commands[name] is module.main


def recipes_workspace(root: Path) -> Path:
    (root / "recipes").mkdir()
    (root / "params.yaml").write_text("# the defaults\nsft:\n  lr: 1  # kept\n  steps: 10\nfetch:\n  sources: {}\n")
    (root / "recipes/a.yaml").write_text("sft:\n  lr: 2\n  epochs: 1\n")
    (root / "recipes/b.yaml").write_text("sft:\n  lr: 3\n")
    return root


def test_recipes_compose_in_order_and_the_later_wins(tmp_path):
    root = recipes_workspace(tmp_path)
    done = ladder("recipe", "a", "b", cwd=root)
    assert done.exit_code == 0, done.output
    assert read_yaml(root / "params.yaml")["sft"] == {"lr": 3, "steps": 10, "epochs": 1}
    assert "# the defaults" in (root / "params.yaml").read_text()  # one round-trip rewrite keeps comments
    done = ladder("recipe", "b", "a", cwd=root)
    assert done.exit_code == 0 and read_yaml(root / "params.yaml")["sft"]["lr"] == 2


def test_an_unknown_recipe_is_one_line_and_writes_nothing(tmp_path):
    root = recipes_workspace(tmp_path)
    before = (root / "params.yaml").read_text()
    done = python_m("tools.recipes", "a", "nope", cwd=root)
    assert done.returncode == 1
    assert one_error_line(done.stderr) == \
        "Error: no recipe 'nope' (neither a file nor recipes/nope.yaml); known: a, b"
    assert (root / "params.yaml").read_text() == before  # `a` was not applied alone
    done = ladder("recipe", "nope", cwd=root)
    assert done.exit_code == 1 and one_error_line(done.output).startswith("Error: no recipe 'nope'")


def test_a_missing_params_file_is_one_line(tmp_path):
    root = recipes_workspace(tmp_path)
    done = ladder("recipe", "a", "--params", "elsewhere.yaml", cwd=root)
    assert done.exit_code == 1 and one_error_line(done.output) == "Error: missing file: elsewhere.yaml"
    done = ladder("pin", "elsewhere.yaml", cwd=root)
    assert done.exit_code == 1 and one_error_line(done.output) == "Error: missing file: elsewhere.yaml"
    done = ladder("launch", "sft", "--params", "elsewhere.yaml", cwd=root)
    assert done.exit_code == 1 and one_error_line(done.output) == "Error: params file not found: elsewhere.yaml"


def test_pin_offline_is_one_line_naming_the_model_and_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("fetch:\n  hub_sources: {}\n  base_model: someone/some-model\n  base_revision: main\n")
    done = python_m("tools.pin", str(params), cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert line.startswith("Error: cannot resolve model someone/some-model at main on the hub: ") and "offline" in line
    assert params.read_text().endswith("base_revision: main\n")


@pytest.mark.parametrize("args, names, command", [
    (("recipe",), "NAME [NAME ...]", "ladder recipe"),
    (("nope",), "'nope'", "ladder"),
    (("timings", "--bogus"), "--bogus", "ladder timings"),
    (("launch", "sft", "extra"), "extra", "ladder launch"),
])
def test_a_bad_argument_is_one_line(args, names, command):
    done = ladder(*args)
    line = one_error_line(done.output)
    assert done.exit_code == 2 and line.startswith("Error: ") and names in line, line
    assert line.endswith(f". See `{command} --help`.")


def test_env_reports_versions_cpu_features_and_the_stages_choices():
    done = ladder("env", cwd=REPO)
    assert done.exit_code == 0, done.output
    out = done.output
    for name in ("python", "torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "dvc"):
        assert re.search(rf"^{name}: \S", out, re.MULTILINE), name
    assert re.search(r"^cpu features: ", out, re.MULTILINE) and re.search(r"^cuda: ", out, re.MULTILINE)
    for stage in MODEL_STAGES:
        assert re.search(rf"^  {stage}: (cpu|cuda) ", out, re.MULTILINE), stage
    assert "bfloat16 autocast on the CPU" in out.split("  sft: ")[1].splitlines()[0]


def test_env_names_the_cpu_features_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    lines = cpu_lines(info)
    assert lines[0].startswith("cpu: Test CPU (")
    assert lines[1] == "cpu features: avx2 avx512f amx_tile amx_bf16"
    assert "avx512_bf16" in lines[2] and "amx_bf16" not in lines[2]
    assert lines[3].endswith(": amx_bf16")
    assert set(CPU_FEATURES) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}


def test_env_reports_the_stages_that_choose_hardware():
    """MODEL_STAGES is the list of stages whose @stage passes hardware=stage_hardware: a stage added or changed there
    shows up in `ladder env`."""
    choosing = {path.stem for path in (REPO / "stages").glob("*.py")
                if re.search(r"@stage\([^)]*hardware=stage_hardware", path.read_text())}
    assert choosing == set(MODEL_STAGES)
