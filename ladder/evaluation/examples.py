"""Replies a reviewer reads side by side: a few prompts chosen by the seed (never by how well a model did), each with
the end of its conversation and the replies of the anchor, of the best generated model and of the reference."""
from __future__ import annotations

import random


def best_generated(ratings: dict[str, float], generated: list[str], anchor: str) -> str | None:
    """The highest-rated generated model other than the anchor (the first by name among equals)."""
    others = sorted((m for m in generated if m != anchor), key=lambda m: (-ratings[m], m))
    return others[0] if others else None


def review_examples(prompts: list[dict], replies: dict[tuple[str, str], str], anchor: str, best: str | None,
                    seed: int, n: int = 3, context_messages: int = 3) -> dict:
    """{"anchor", "best_model", "examples": [{prompt_id, context, replies}]}. `prompts`: {prompt_id, messages,
    reference}; `replies`: (prompt_id, model) -> reply. The prompts are a seeded sample of the ids, in id order."""
    ids = sorted(p["prompt_id"] for p in prompts)
    chosen = sorted(random.Random(f"examples-{seed}").sample(ids, min(n, len(ids))))
    by_id = {p["prompt_id"]: p for p in prompts}
    examples = []
    for prompt_id in chosen:
        p = by_id[prompt_id]
        shown = {anchor: replies.get((prompt_id, anchor))}
        if best is not None:
            shown[best] = replies.get((prompt_id, best))
        shown["reference"] = p["reference"]
        examples.append({"prompt_id": prompt_id,
                         "context": [{"role": m["role"], "content": m["content"]}
                                     for m in p["messages"][-context_messages:]],
                         "replies": shown})
    return {"anchor": anchor, "best_model": best, "examples": examples}
