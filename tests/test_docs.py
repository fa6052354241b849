"""The README and docs/ stay true to the code: every command they show answers --help, every relative link resolves."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a fenced block, indented under a list item too: a shell one whole, an unlabelled one by its `$ ` lines
# every fenced block is matched (so that a python block's closing fence never opens one), shell ones are read
FENCED_BLOCK = re.compile(r"^[ \t]*```([\w-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
SHELLS = ("bash", "sh", "shell", "console")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def shell_lines(text: str) -> list[str]:
    """The command lines of a page's shell blocks: prompts, comments and continuations handled."""
    lines = []
    for language, block in FENCED_BLOCK.findall(text):
        if language and language not in SHELLS:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not language and not line.startswith("$ "):
                continue  # a diagram, a layout, a stage's output
            line = line.removeprefix("$ ").strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def help_form(line: str) -> tuple[str, ...] | None:
    """The `--help` call of a documented command, for those this project provides (`ladder ...`,
    `python -m ...`, `python benchmarks/...`), else None."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: not one shell command (a fragment in prose)
        return None
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return None
    if words[0] == "ladder":
        subcommand = words[1:2] if len(words) > 1 and not words[1].startswith("-") else []
        return ("ladder", *subcommand, "--help")
    if words[0] in ("python", "python3") and len(words) > 2 and words[1] == "-m":
        return ("python", "-m", words[2], "--help")
    if words[0] in ("python", "python3") and len(words) > 1 and words[1].startswith("benchmarks/"):
        return ("python", words[1], "--help")
    return None


def documented_commands() -> dict[tuple[str, ...], str]:
    """Each distinct --help call, with the page that shows it."""
    found: dict[tuple[str, ...], str] = {}
    for page in PAGES:
        for line in shell_lines(page.read_text()):
            form = help_form(line)
            if form:
                found.setdefault(form, page.relative_to(ROOT).as_posix())
    return found


def run_help(form: tuple[str, ...]) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    program = {"ladder": [str(bin_dir / "ladder")], "python": [sys.executable]}[form[0]]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*program, *form[1:]], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_the_pages_show_commands():
    # a parser that silently found nothing would pass every test below
    forms = documented_commands()
    assert ("ladder", "review", "--help") in forms
    assert any(form[0] == "python" and form[1] == "-m" for form in forms)


@pytest.mark.parametrize("form", sorted(documented_commands()), ids=" ".join)
def test_every_documented_command_answers_help(form):
    done = run_help(form)
    assert done.returncode == 0, f"{' '.join(form)} ({documented_commands()[form]}): {done.stderr[-800:]}"
    assert "usage" in done.stdout.lower()


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # links inside code are not links
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert broken == [], f"{page.relative_to(ROOT)}: links to missing files {broken}"


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[there](exists.md) [gone](missing.md#part) [web](https://dvc.org) [anchor](#top)\n"
                    "```bash\n[not a link](nowhere.md)\n```\n")
    (tmp_path / "exists.md").write_text("")
    assert relative_links(page) == ["exists.md", "missing.md#part"]


def test_help_forms_of_documented_lines():
    assert help_form("ladder recipe chai wsdm") == ("ladder", "recipe", "--help")
    assert help_form("ladder --version") == ("ladder", "--help")
    assert help_form("CUDA_VISIBLE_DEVICES=0 python -m stages.sft --lr 1") == ("python", "-m", "stages.sft", "--help")
    assert help_form("python benchmarks/throughput.py --timeout 60  # a comment") == \
        ("python", "benchmarks/throughput.py", "--help")
    assert help_form("dvc exp run -S sft.lr=1") is None
    assert shell_lines("```console\n$ ladder env \\\n  --x\n# note\n```\n") == ["ladder env    --x"]
    assert shell_lines("1. Install\n   ```bash\n   ladder pin\n   ```\n") == ["ladder pin"]
    assert shell_lines("```\n$ python -m stages.sft\nError: one line\nstages/ one script\n```\n") == \
        ["python -m stages.sft"]
    assert shell_lines("```python\nx = 1\n```\nprose\n```bash\nladder env\n```\n") == ["ladder env"]
