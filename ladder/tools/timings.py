"""Print the timing files (metrics/timings/<stage>.json): wall time, throughput, load times, per stage.

    python -m ladder.tools.timings                  # one table per stage
    python -m ladder.tools.timings --diff main      # beside the figures committed at a revision (git show)
    python -m ladder.tools.timings --json           # one JSON object {stage: {figure: value}}
    ladder timings --diff main                # the same, through the ladder command

Why a command of its own: these figures change on every run (and with the machine and whatever else runs
beside it), so the stages declare the files as plain outputs with `cache: false`, not as DVC metrics. Declared
as metrics they became rows of `dvc metrics diff` that always changed and about 100 columns of
`dvc exp show --only-changed`, burying the figures that do say what a change did. git still keeps the files,
so they are read here, and a revision's copy with `git show`. Standard library and click only (dvc installs it).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click

from ladder import paths
from ladder.stage import StageCommand

TIMINGS = str(paths.TIMINGS)


def flatten(value, prefix: str = "") -> dict:
    """{"parse": {"chai": {"rows": 700}}} -> {"parse.chai.rows": 700}, the dotted names `dvc metrics` uses."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat = {}
    for key, inner in value.items():
        flat.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def read_tree(folder: Path) -> dict[str, dict]:
    """stage -> its timing file's figures, from the working tree."""
    if not folder.is_dir():
        raise SystemExit(f"ladder.tools.timings: no folder {folder} (run `dvc repro` first, or pass --dir)")
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def read_revision(rev: str, folder: str) -> dict[str, dict]:
    """stage -> figures, as committed at `rev`; an empty dict where the revision has no timing files."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{folder}"], capture_output=True, text=True)
    if listed.returncode != 0:
        if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True).returncode != 0:
            raise SystemExit(f"ladder.tools.timings: git knows no revision {rev!r}")
        return {}
    found = {}
    for name in sorted(listed.stdout.split()):
        if name.endswith(".json"):
            shown = subprocess.run(["git", "show", f"{rev}:{folder}/{name}"], capture_output=True, text=True,
                                   check=True)
            found[name[: -len(".json")]] = json.loads(shown.stdout)
    return found


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def ratio(old, new) -> str:
    """new / old as "x1.25": throughput and seconds alike read as how many times more."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if not numbers or old == 0:
        return ""
    return f"x{new / old:.3g}"


def aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def render(current: dict[str, dict], base: dict[str, dict] | None = None, rev: str = "") -> str:
    """One table per stage: figure and value, or with `base`: figure, value at `rev`, value now, ratio."""
    lines = []
    for stage in sorted(set(current) | set(base or {})):
        now = flatten(current.get(stage, {}))
        lines.append(f"{stage}" + ("" if stage in current else "  (no timing file in the working tree)"))
        if base is None:
            rows = [["figure", "value"], *[[name, fmt(value)] for name, value in now.items()]]
        else:
            then = flatten(base.get(stage, {}))
            names = list(now) + [name for name in then if name not in now]
            rows = [["figure", rev, "now", "change"],
                    *[[name, fmt(then.get(name)), fmt(now.get(name)), ratio(then.get(name), now.get(name))]
                      for name in names]]
        lines += ["  " + line for line in aligned(rows)] + [""]
    return "\n".join(lines) if lines else "No timing files.\n"


def report(folder: str = TIMINGS, rev: str | None = None, as_json: bool = False) -> str:
    """The timing files under `folder` as tables (or JSON), beside their committed values at `rev` when given."""
    current = read_tree(Path(folder))
    base = read_revision(rev, folder.rstrip("/")) if rev else None
    if as_json:
        out = current if base is None else {"rev": rev, "old": base, "new": current}
        return json.dumps(out, indent=2) + "\n"
    return render(current, base, rev or "")


@click.command("timings", cls=StageCommand, help=__doc__,
               short_help="Print the timing files per stage, or beside a revision's.")
@click.option("--diff", "rev", metavar="REV", help="show each figure beside its value at this git revision")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object {stage: figures}")
@click.option("--dir", "folder", default=TIMINGS, show_default=True, help="the timing files' folder")
def main(rev: str | None, as_json: bool, folder: str) -> None:
    click.echo(report(folder, rev, as_json), nl=False)


if __name__ == "__main__":
    main()
