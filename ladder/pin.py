"""Pin every hub source and hub model in params.yaml to the commit its branch points at now.

    python -m ladder.pin [params.yaml]      # needs hub access (and HF_TOKEN for gated repositories)

A hub entry whose revision is empty or a branch or tag name (`main`, `v1.0`) gets the commit hash it
resolves to today; a commit hash is left alone, and so are local paths, bundled and tiny models. The
fetch stage refuses a hub source without a revision, so nothing is fetched unpinned; commit the pinned
params.yaml so that every later `dvc repro` fetches the same bytes.
"""
from __future__ import annotations

import re
import sys
from typing import Callable

COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_commit(kind: str, repo: str, revision: str | None) -> str:
    """The commit `revision` (default: the main branch) of a hub dataset or model points at."""
    from huggingface_hub import HfApi

    from ladder.sources import hf_token

    api = HfApi(token=hf_token())
    info = api.dataset_info if kind == "dataset" else api.model_info
    return info(repo, revision=revision or None).sha


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


def main(argv: list[str]) -> int:
    from ladder.recipes import edit

    params = argv[0] if argv else "params.yaml"
    lines: list[str] = []
    edit(params, lambda data: lines.extend(pin(data["fetch"])))
    print("\n".join(lines) or "everything was pinned already")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
