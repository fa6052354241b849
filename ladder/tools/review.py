"""The pull-request review: what a reviewer needs to judge a change to the pipeline, as one markdown comment.

    python -m ladder.tools.review main            # or origin/main, a commit, a tag
    python -m ladder.tools.review main --all      # every param and metric, unchanged and within tolerance too
    ladder review main                      # the same, through the ladder command

In this order: the ladder's validity verdict and its checks (metrics/eval.json `validity`); the ladder itself
(rating, 95% interval, win rate against the anchor, and the rating each model had at the base revision); a few
prompts with the replies of the anchor and of the best model side by side (reports/examples.json); then
`dvc params diff` and `dvc metrics diff` against the base revision, where metric changes within the tolerance
of params.yaml `review` (float noise between machines) are counted instead of listed.

Needs git and dvc, no data and no credentials: params, metrics and examples are committed files. Timing files
(metrics/timings/) are not DVC metrics, and a base revision that still declared them has them left out here;
`ladder timings --diff <base>` compares them. `.github/workflows/review.yml` posts this with CML
(`cml comment update`) on every pull request. Standard library, ruamel.yaml and click only (dvc installs them), so
the workflow needs nothing but `pip install dvc`.
"""
from __future__ import annotations

import html
import json
import math
import subprocess
import sys
from pathlib import Path

import click

from ladder import paths
from ladder.params import read_yaml
from ladder.stage import StageCommand

EVAL = str(paths.metrics_file("eval"))
EXAMPLES = str(paths.EXAMPLES)
TIMINGS = f"{paths.TIMINGS}/"
CELL_CHARS = 600        # a reply or turn longer than this is cut: the comment stays readable (GitHub caps 65536)


def dvc_json(args: list[str]) -> dict:
    import importlib.util

    # this interpreter's dvc, not the first on PATH: `.venv/bin/ladder review` works without activating .venv
    if importlib.util.find_spec("dvc") is None:
        raise SystemExit("ladder.tools.review: dvc is not installed (pip install dvc)")
    done = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ladder.tools.review: dvc {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout or "{}")


def json_at(rev: str | None, path: str) -> dict | None:
    """A committed JSON file at a git revision (the working tree when `rev` is None); None when absent."""
    if rev is None:
        file = Path(path)
        return json.loads(file.read_text()) if file.is_file() else None
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def review_params(params: dict) -> tuple[tuple[float, float], int]:
    """(absolute, relative) tolerance and the number of examples, from params.yaml `review`."""
    from ladder.params import ParamsError, checked

    try:
        section = checked("review", params)
    except ParamsError as error:
        raise SystemExit(f"ladder.tools.review: {error}") from None
    return (float(section["tolerance"]["absolute"]), float(section["tolerance"]["relative"])), int(section["examples"])


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def fixed(value, digits: int) -> str:
    return f"{value:.{digits}f}" if is_number(value) else "-"


def cell(text, limit: int = CELL_CHARS) -> str:
    """Text for a markdown table cell or quote: HTML-escaped (replies hold `<|user|>`-like markup that GitHub
    would swallow), pipes escaped, newlines as <br>, cut at `limit` characters."""
    text = "" if text is None else str(text)
    if len(text) > limit:
        text = text[:limit].rstrip() + " …"
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def within(old, new, absolute: float, relative: float) -> bool:
    """Whether a change is float noise: both numbers and |new - old| <= max(absolute, relative * max(|old|, |new|))
    (math.isclose's rule)."""
    return is_number(old) and is_number(new) and math.isclose(old, new, rel_tol=relative, abs_tol=absolute)


# ------------------------------------------------------------------------------------------ sections
def verdict(evaluation: dict | None) -> list[str]:
    if evaluation is None:
        return [f"No `{EVAL}` in this branch: the ladder has not been run (`dvc repro`)."]
    validity = evaluation.get("validity")
    if not isinstance(validity, dict) or "valid" not in validity:
        return [f"No validity verdict in `{EVAL}` (written by code older than the ladder's validity checks)."]
    reasons = [str(r) for r in validity.get("reasons") or []]
    if validity["valid"]:
        lines = ["**Ladder valid**" + (f" ({'; '.join(cell(r) for r in reasons)})" if reasons else "")]
    else:
        lines = ["**Ladder NOT valid**: " + ("; ".join(cell(r) for r in reasons) or "no reason given")]
    checks = validity.get("checks") or {}
    if checks:
        lines += ["", "| check | value | threshold | pass | detail |", "| --- | --- | --- | --- | --- |"]
        for name, check in checks.items():
            check = check if isinstance(check, dict) else {"value": check}
            detail = ", ".join(f"{k} {fmt(v)}" for k, v in check.items() if k not in ("value", "threshold", "pass"))
            passed = check.get("pass")
            mark = "-" if passed is None else ("pass" if passed else "**FAIL**")
            lines.append(f"| {name} | {fmt(check.get('value'))} | {fmt(check.get('threshold'))} | {mark} | "
                         f"{cell(detail)} |")
    return lines


def ladder(evaluation: dict | None, base_evaluation: dict | None, base: str) -> list[str]:
    models = (evaluation or {}).get("models") or {}
    if not models:
        return [f"No ladder in `{EVAL}`."]
    anchor = evaluation.get("anchor", "base")
    validity = evaluation.get("validity")
    heading = f"### The ladder ({evaluation.get('prompts', '?')} prompts, anchor `{anchor}`)"
    if isinstance(validity, dict) and validity.get("valid") is False:
        heading += ": NOT valid, read the ratings with the verdict above"
    base_models = (base_evaluation or {}).get("models") or {}
    length = any("elo_length_controlled" in m for m in models.values())
    header = ["#", "model", "Elo", "95% interval", f"win rate vs `{anchor}`", "mean reward"]
    header += ["length-controlled Elo"] * length + [f"Elo at `{base}`"] * bool(base_models)
    lines = [heading, "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def rating(item):
        value = item[1].get("elo")
        return -value if is_number(value) else math.inf

    for rank, (name, model) in enumerate(sorted(models.items(), key=rating), start=1):
        label = f"`{name}`" + (" (control)" if model.get("control") else "") + (" (anchor)" if name == anchor else "")
        interval = model.get("elo_95")
        row = [str(rank), label, fixed(model.get("elo"), 1),
               f"[{fixed(interval[0], 1)}, {fixed(interval[1], 1)}]" if isinstance(interval, list) and
               len(interval) == 2 else "-",
               fixed(model.get("win_rate_vs_anchor"), 3), fixed(model.get("mean_reward"), 3)]
        if length:
            row.append(fixed(model.get("elo_length_controlled"), 1))
        if base_models:
            row.append(fixed((base_models.get(name) or {}).get("elo"), 1))
        lines.append("| " + " | ".join(row) + " |")
    if any(m.get("control") for m in models.values()):
        lines += ["", "Controls are scored, never generated: `reference` is the data's own next reply, `shuffled` "
                      "the reference reply of another prompt (fluent, off topic). A ladder that does not put "
                      "`reference` above `shuffled` is not reading the replies."]
    return lines


def examples(found: dict | None, count: int) -> list[str]:
    if found is None:
        return [f"No `{EXAMPLES}` in this branch: no replies to show."]
    anchor, best = found.get("anchor", "base"), found.get("best_model")
    shown = [m for m in (anchor, best) if m] if best != anchor else [anchor]
    picked = (found.get("examples") or [])[:count]
    if not picked:
        return [f"`{EXAMPLES}` holds no examples."]
    title = f"`{anchor}` and the best model `{best}`" if best and best != anchor else f"`{anchor}` (the best model)"
    lines = [f"### Replies side by side: {title}"]
    for number, example in enumerate(picked, start=1):
        replies = example.get("replies") or {}
        columns = shown + [m for m in ("reference",) if m in replies and m not in shown]
        # The metrics stage picks how much of the conversation to keep (its end); all of it is shown.
        lines += ["", f"**{number}. prompt `{example.get('prompt_id', '?')}`**", ""]
        for message in example.get("context") or []:
            lines.append(f"> **{cell(message.get('role'))}**: {cell(message.get('content'))}  ")
        lines += ["", "| " + " | ".join(f"`{m}`" for m in columns) + " |", "|" + " --- |" * len(columns),
                  "| " + " | ".join(cell(replies[m]) if m in replies else "-" for m in columns) + " |"]
    return lines


def changes(diff: dict, kind: str, tol: tuple[float, float] | None = None,
            show_all: bool = False) -> list[str]:
    """Markdown rows `file | name | base | this branch | change` from dvc's --json diff; with `tol`, numeric
    changes within it are counted, not listed, and timing files are left out."""
    rows, quiet = [], 0
    for path, entries in sorted(diff.items()):
        if tol is not None and path.startswith(TIMINGS):
            continue
        for name, change in sorted(entries.items()):
            old, new = change.get("old"), change.get("new")
            if tol is not None and not show_all and within(old, new, *tol):
                quiet += 1
                continue
            delta = change.get("diff")
            rows.append(f"| {path} | {name} | {fmt(old)} | {fmt(new)} | {fmt(delta) if is_number(delta) else ''} |")
    lines = (["| file | name | base | this branch | change |", "| --- | --- | --- | --- | --- |", *rows]
             if rows else [f"No {kind} changed" + (" beyond the tolerance." if quiet else ".")])
    if quiet:
        lines += ["", f"{quiet} metric{'s' * (quiet != 1)} changed by less than the tolerance "
                      f"(absolute {tol[0]:g}, relative {tol[1]:g}: params.yaml `review.tolerance`), not shown."]
    return lines


def render(base: str, evaluation: dict | None, base_evaluation: dict | None, found_examples: dict | None,
           params_diff: dict, metrics_diff: dict, tol: tuple[float, float], n_examples: int,
           show_all: bool = False) -> str:
    parts = [[f"## ladder review: this branch against `{base}`"], verdict(evaluation),
             ladder(evaluation, base_evaluation, base), examples(found_examples, n_examples),
             ["### Params changed", "", *changes(params_diff, "params", show_all=show_all)],
             ["### Metrics changed", "", *changes(metrics_diff, "metrics", tol, show_all),
              "", f"Timings are not metrics: `ladder timings --diff {base}`. "
                  f"Plots: `dvc plots diff {base}`."]]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


def review(base: str, show_all: bool = False) -> str:
    """The review of the working tree (the pull request's head) against `base`, from the repository root."""
    if not Path("params.yaml").is_file():
        raise SystemExit("ladder.tools.review: no params.yaml here: run it from the repository root")
    tol, n_examples = review_params(read_yaml("params.yaml"))
    flags = ["--all"] if show_all else []
    return render(base, json_at(None, EVAL), json_at(base, EVAL), json_at(None, EXAMPLES),
                  dvc_json(["params", "diff", base, *flags]), dvc_json(["metrics", "diff", base, *flags]),
                  tol, n_examples, show_all)


@click.command("review", cls=StageCommand, help=__doc__,
               short_help="The pull-request review against a base revision, as markdown.")
@click.argument("base")
@click.option("--all", "show_all", is_flag=True,
              help="list unchanged params and metrics, and changes within the tolerance, too")
def main(base: str, show_all: bool) -> None:
    click.echo(review(base, show_all), nl=False)


if __name__ == "__main__":
    main()
