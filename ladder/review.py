"""What a pull request changed, as markdown: `dvc params diff` and `dvc metrics diff` against a base revision.

    python -m ladder.review main            # or origin/main, a commit, a tag
    python -m ladder.review main --all      # every metric, not only the ones that changed

Needs git and dvc, no data and no credentials: params and metrics are committed files. Timing files
(metrics/timings/) are left out, they change on every run. The GitHub workflow
.github/workflows/review.yml posts this as one comment on the pull request and updates it on every push.
Standard library only, so the workflow needs nothing but `pip install dvc`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

MARKER = "<!-- ladder-review -->"


def dvc_json(args: list[str]) -> dict:
    done = subprocess.run(["dvc", *args, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout or "{}")


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(diff: dict, kind: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Markdown rows `path | name | base | this branch | change` from dvc's --json diff."""
    rows = []
    for path, entries in sorted(diff.items()):
        if path.startswith(skip):
            continue
        for name, change in sorted(entries.items()):
            delta = change.get("diff")
            rows.append(f"| {path} | {name} | {fmt(change.get('old'))} | {fmt(change.get('new'))} | "
                        f"{fmt(delta) if isinstance(delta, (int, float)) else ''} |")
    if not rows:
        return [f"No {kind} changed."]
    return ["| file | name | base | this branch | change |", "| --- | --- | --- | --- | --- |", *rows]


def review(base: str, show_all: bool = False) -> str:
    flags = ["--all"] if show_all else []
    params = dvc_json(["params", "diff", base, *flags])
    metrics = dvc_json(["metrics", "diff", base, *flags])
    return "\n".join([MARKER, f"## ladder: what this branch changes against `{base}`", "", "### Params", "",
                      *table(params, "params"), "", "### Metrics", "",
                      *table(metrics, "metrics", skip=("metrics/timings/",)), "",
                      "Reproduce with `dvc repro`; plots: `dvc plots diff " + base + "`.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the revision to compare with (branch, tag or commit)")
    parser.add_argument("--all", action="store_true", help="list unchanged params and metrics too")
    args = parser.parse_args(argv)
    sys.stdout.write(review(args.base, args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
