"""The repository's shape, read from the source: every stage declares in dvc.yaml the ladder modules it runs (so a
change to one reruns the stages it affects), stages never import each other, tests and benchmarks reach shared logic
through ladder/ (a stage's Click `main` aside), and importing any stage or ladder module loads no heavy library."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "sklearn")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (`from ladder import x` gives ladder.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_file(module: str) -> str | None:
    """The ladder file a dotted name lives in: its longest prefix that is a .py file (ladder.judge.classifier.load_judge
    is a function of ladder/judge/classifier.py); None for a package alone (its __init__ holds a docstring only)."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        candidate = "/".join(parts[:end]) + ".py"
        if (ROOT / candidate).is_file():
            return candidate
    return None


def ladder_files(modules: set[str]) -> set[str]:
    """The ladder .py files among `modules`."""
    return {f for m in modules if m.startswith("ladder.") and (f := module_file(m))}


def ladder_closure(path: Path) -> set[str]:
    """The ladder modules `path` runs: the ones it imports, and theirs, transitively."""
    todo, seen = ladder_files(imported_modules(path)), set()
    while todo:
        module = todo.pop()
        seen.add(module)
        todo |= ladder_files(imported_modules(ROOT / module)) - seen
    return seen


def stage_entries() -> list[tuple[str, dict]]:
    """(dvc.yaml name, stage body) per stage; a foreach stage once, by its `do` template."""
    stages = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"]
    return [(name, body.get("do", body)) for name, body in stages.items()]


def code_of(cmd: str) -> set[str]:
    """The Python files a stage's command runs: stages/<name>.py, and ladder/launch.py when it launches one."""
    launched = re.search(r"-m ladder\.launch (\w+)", cmd)
    if launched:
        return {f"stages/{launched.group(1)}.py", "ladder/launch.py"}
    direct = re.search(r"-m stages\.(\w+)", cmd)
    assert direct, f"no stage module in {cmd!r}"
    return {f"stages/{direct.group(1)}.py"}


def test_every_stage_has_its_code_found():
    entries = stage_entries()
    assert len(entries) >= 11
    for name, body in entries:
        assert all((ROOT / f).is_file() for f in code_of(body["cmd"])), name


@pytest.mark.parametrize("name,body", stage_entries(), ids=[n for n, _ in stage_entries()])
def test_dvc_deps_are_the_ladder_modules_each_stage_runs(name, body):
    code = code_of(body["cmd"])
    needed = set().union(*(ladder_closure(ROOT / f) for f in code)) | code
    declared = {d for d in body["deps"] if isinstance(d, str) and d.endswith(".py")}
    assert not needed - declared, f"{name}: dvc.yaml lacks {sorted(needed - declared)}"
    assert not declared - needed, f"{name}: dvc.yaml declares {sorted(declared - needed)}, which it never imports"
    if any("use_template(" in (ROOT / f).read_text() for f in needed - {"ladder/training/chat.py"}):  # reads ladder/training/templates
        assert "ladder/training/templates" in body["deps"], name


def test_the_import_reader_follows_imports_inside_functions_and_through_ladder(tmp_path):
    # stages/sft.py imports ladder.training.supervised at the top; supervised imports ladder.training.chat inside
    # train(), and chat imports ladder.batching at its top
    closure = ladder_closure(ROOT / "stages/sft.py")
    assert {"ladder/training/supervised.py", "ladder/training/chat.py", "ladder/batching.py", "ladder/training/trainer.py"} <= closure
    assert "ladder/judge/classifier.py" not in closure
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from ladder.evaluation import elo\n    import ladder.io\n")
    assert ladder_closure(fake) == {"ladder/evaluation/elo.py", "ladder/io.py", "ladder/errors.py"}  # io imports errors


@pytest.mark.parametrize("path", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_no_stage_imports_another(path):
    assert not {m for m in imported_modules(path) if m == "stages" or m.startswith("stages.")}


def stage_imports(path: Path) -> list[str]:
    """What `path` takes from stages/: `module.name` per imported name, `module` for a bare `import stages.x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "stages" or a.name.startswith("stages.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stages":
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


@pytest.mark.parametrize("path", sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_and_benchmarks_take_shared_logic_from_ladder(path):
    wrong = [name for name in stage_imports(path) if not name.endswith(".main")]
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong} from stages/: move it to ladder/"


def test_importing_stages_and_ladder_loads_no_heavy_library():
    modules = [f"stages.{p.stem}" for p in sorted((ROOT / "stages").glob("*.py")) if p.stem != "__init__"]
    modules += [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                for p in sorted((ROOT / "ladder").rglob("*.py"))]
    assert "ladder.judge.classifier" in modules and "ladder.tools.cli" in modules
    code = (f"import importlib, json, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_every_path_the_code_names_is_one_a_stage_declares():
    from dvc.repo import Repo

    from ladder import paths

    with Repo(str(ROOT)) as repo:
        stages = {stage.name: {str(out.def_path) for out in stage.outs} for stage in repo.index.stages}
    outputs = set().union(*stages.values())

    def declared(path: Path) -> bool:  # an output, inside one, or a folder of them
        return any(path == Path(out) or Path(out) in path.parents or path in Path(out).parents for out in outputs)

    named = {name: value for name, value in vars(paths).items() if isinstance(value, Path) and name != "CHECKPOINTS"}
    named |= {f"FETCHED_MODELS[{k}]": v for k, v in paths.FETCHED_MODELS.items()}
    assert len(named) >= 20
    for name, path in named.items():
        assert declared(path), f"ladder/paths.py {name} = {path} is no stage's output in dvc.yaml"
    for stage, outs in stages.items():  # the metrics and timing files each stage writes are where paths says
        for out in outs:
            if out.startswith(f"{paths.METRICS}/") and out.endswith(".json"):
                kind = paths.timings_file if out.startswith(f"{paths.TIMINGS}/") else paths.metrics_file
                assert str(kind(Path(out).stem)) == out, (stage, out)
    assert "checkpoints" in (ROOT / ".gitignore").read_text() and "/checkpoints" in (ROOT / ".dvcignore").read_text()
