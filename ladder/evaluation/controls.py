"""The ladder's held-out prompts and its controls: replies scored and judged like a model's, never generated.

- `reference`: the conversation's own next reply (the assistant turn the prompt was cut before);
- `shuffled`: the reference reply of another chosen prompt of the same source, by a seeded derangement within the
  source: fluent and in domain, but written for another conversation. A source with a single chosen prompt borrows
  the reply of another eval conversation of that source; a source with no other eval conversation borrows from
  another source (logged), which makes that prompt's control easier to beat, never harder.
A judge that does not put `reference` above `shuffled` is not reading the replies against the conversation.
"""
from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

from ladder.errors import InputError
from ladder.params import CONTROLS

log = logging.getLogger("ladder.evaluation.controls")
REQUIRED = ("id", "source", "messages", "thumbs_up", "split")


def eval_prompts(path: str | Path) -> list[dict]:
    """Every usable eval conversation, in id order, cut before its last assistant turn: {prompt_id, source, messages,
    reference}. A conversation rated thumbs down is left out: its last reply is known bad, so it cannot be the
    reference."""
    import polars as pl

    from ladder.io import read_parquet
    from ladder.data.records import require_columns

    df = read_parquet(path)
    require_columns(df, REQUIRED, path)
    prompts = []
    for row in df.filter(pl.col("split") == "eval").sort("id").iter_rows(named=True):
        if row["thumbs_up"] is False:
            continue
        last = max((i for i, m in enumerate(row["messages"]) if m["role"] == "assistant"), default=0)
        if last and any(m["role"] == "user" for m in row["messages"][:last]):
            prompts.append({"prompt_id": row["id"], "source": row["source"], "messages": row["messages"][:last],
                            "reference": row["messages"][last]["content"]})
    return prompts


def held_out_prompts(path: str | Path, n: int, seed: int) -> list[dict]:
    """`n` of the eval prompts (seeded choice), in id order."""
    prompts = eval_prompts(path)
    return sorted(random.Random(seed).sample(prompts, min(n, len(prompts))), key=lambda p: p["prompt_id"])


def derangement(n: int, rng: random.Random) -> list[int]:
    """A random permutation with no fixed point (Sattolo's algorithm: a single cycle), for n >= 2."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return order


def shuffled_replies(prompts: list[dict], pool: list[dict], seed: int) -> list[str]:
    """Per prompt, the reference reply of another prompt of its source (see the module docstring)."""
    rng = random.Random(f"shuffled-{seed}")
    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_source.setdefault(p["source"], []).append(i)
    out: list[str | None] = [None] * len(prompts)
    for source in sorted(by_source):
        members = by_source[source]
        if len(members) > 1:
            for i, j in zip(members, derangement(len(members), rng)):
                out[i] = prompts[members[j]]["reference"]
            continue
        (i,) = members
        others = [q for q in pool if q["source"] == source and q["prompt_id"] != prompts[i]["prompt_id"]]
        if not others:
            others = [q for q in pool if q["prompt_id"] != prompts[i]["prompt_id"]]
            if not others:
                raise InputError("the shuffled control needs at least two eval conversations")
            log.warning("source %s has one eval conversation: its shuffled control borrows the reply of "
                        "another source's conversation", source)
        out[i] = rng.choice(others)["reference"]
    return out


def control_replies(prompts: list[dict], pool: list[dict], controls: list[str], seed: int) -> dict[str, list[str]]:
    """{control name: one reply per prompt}, in `controls` order."""
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control(s) {unknown}; known: {', '.join(CONTROLS)}")
    out = {}
    for name in controls:
        out[name] = [p["reference"] for p in prompts] if name == "reference" else shuffled_replies(prompts, pool, seed)
    return out


def identical_rows(responses: dict[str, list[str]], prompts: list[dict]) -> list[dict]:
    """Judge rows of every model's and control's reply against itself on every prompt."""
    from ladder.training.reward_model import role_lines

    return [{"id": f"{p['prompt_id']}|{m}|{m}", "prompt_id": p["prompt_id"], "model": m,
             "prompt": role_lines(p["messages"]), "response_a": replies[i], "response_b": replies[i]}
            for m, replies in responses.items() for i, p in enumerate(prompts)]


def pairwise(responses: dict[str, list[str]], prompts: list[dict]) -> list[dict]:
    """Judge rows for every pair of models and controls (models in `inference.models` order, then the controls) on
    every prompt; the judge's prompt field is the conversation so far, one "role: content" line per message."""
    from ladder.training.reward_model import role_lines

    return [{"id": f"{p['prompt_id']}|{a}|{b}", "prompt_id": p["prompt_id"], "model_a": a, "model_b": b,
             "prompt": role_lines(p["messages"]), "response_a": responses[a][i], "response_b": responses[b][i]}
            for i, p in enumerate(prompts) for a, b in itertools.combinations(responses, 2)]
