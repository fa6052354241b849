"""Pin every hub source and hub model in params.yaml to the commit its branch points at now.

    python -m ladder.tools.pin [params.yaml]      # needs hub access (and HF_TOKEN for gated repositories)
    ladder pin [params.yaml]                # the same

A hub entry whose revision is empty or a branch or tag name (`main`, `v1.0`) gets the commit hash it
resolves to today; a commit hash is left alone, and so are local paths, bundled and tiny models. The
fetch stage refuses a hub source without a revision, so nothing is fetched unpinned; commit the pinned
params.yaml so that every later `dvc repro` fetches the same bytes. Offline (HF_HUB_OFFLINE=1, no network) or
refused by the hub (no such repository, a gated one without a token), it stops with one line naming the entry,
and params.yaml is left as it was.
"""
from __future__ import annotations

import re
from typing import Callable

import click

from ladder.errors import InputError
from ladder.stage import StageCommand

COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_errors() -> tuple[type[Exception], ...]:
    """What a hub lookup raises when the network or the hub, not the code, is the problem: offline mode and lost
    connections (OSErrors under requests, and huggingface_hub's OfflineModeIsEnabled), and the HTTP library's
    errors, which HfHubHTTPError (a missing or gated repository, a bad token) derives from whichever library
    this huggingface_hub uses (requests, httpx, httpx2)."""
    from huggingface_hub.errors import HfHubHTTPError

    return (OSError, *HfHubHTTPError.__bases__)


def hub_commit(kind: str, repo: str, revision: str | None) -> str:
    """The commit `revision` (default: the main branch) of a hub dataset or model points at; an InputError of one
    line naming the entry when the hub cannot be asked or refuses."""
    from huggingface_hub import HfApi

    from ladder.data.sources import hf_token

    api = HfApi(token=hf_token())
    info = api.dataset_info if kind == "dataset" else api.model_info
    try:
        return info(repo, revision=revision or None).sha
    except hub_errors() as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"cannot resolve {kind} {repo} at {revision or 'main'} on the hub: {reason}") from None


def pinned(value) -> bool:
    return isinstance(value, str) and bool(COMMIT.fullmatch(value))


def pin(fetch: dict, resolve: Callable[[str, str, str | None], str] = hub_commit) -> list[str]:
    """Pin `fetch` (the params section) in place; returns what changed, one line each."""
    def commit_of(kind: str, repo: str, revision: str | None) -> str:
        commit = resolve(kind, repo, revision)
        if not pinned(commit):
            raise ValueError(f"the hub gave {commit!r} for {kind} {repo} at {revision or 'main'}: not a commit hash")
        changed.append(f"{kind} {repo}: {revision or 'main'} -> {commit}")
        return commit

    changed: list[str] = []
    for source in (fetch.get("hub_sources") or {}).values():
        if not pinned(source.get("revision")):
            source["revision"] = commit_of("dataset", source["hub"], source.get("revision"))
    for model in ("base", "judge", "reward"):
        repo = fetch.get(f"{model}_model") or ""
        if "/" in repo and ":" not in repo and not pinned(fetch.get(f"{model}_revision")):
            fetch[f"{model}_revision"] = commit_of("model", repo, fetch.get(f"{model}_revision"))
    return changed


def pin_file(params: str) -> list[str]:
    """Pin the `fetch` section of the params file `params` in place (comments and order kept); what changed."""
    from ladder.tools.recipes import edit

    lines: list[str] = []

    def pin_fetch(data: dict) -> None:
        if not isinstance(data.get("fetch"), dict):
            raise InputError(f"{params}: no section 'fetch'")
        lines.extend(pin(data["fetch"]))

    edit(params, pin_fetch)
    return lines


@click.command("pin", cls=StageCommand, help=__doc__, short_help="Pin hub sources and models to today's commits.")
@click.argument("params_file", default="params.yaml", metavar="[PARAMS_FILE]")
def main(params_file: str) -> None:
    try:
        lines = pin_file(params_file)
    except InputError as error:
        raise click.ClickException(str(error)) from None
    except FileNotFoundError as error:
        raise click.ClickException(f"missing file: {error.filename or error}") from None
    click.echo("\n".join(lines) or "everything was pinned already")


if __name__ == "__main__":
    main()
