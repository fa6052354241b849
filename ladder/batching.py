"""How texts become batches, for scoring, judging and generating alike: indices grouped by token length, and a pad
token for tokenizers that come without one."""
from __future__ import annotations


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths` in batches of `batch_size`, shortest first (input order among equals), so that little
    compute goes to padding; callers put each result back at its index."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def with_pad_token(tokenizer):
    """The tokenizer, padding with its end-of-sequence token when it has no pad token (decoder chat models ship
    none, and a batch of unequal rows needs one)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
