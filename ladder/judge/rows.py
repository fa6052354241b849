"""The judge's rows: the arena table, the judge's share of the role-play preference pairs (ladder/data/holdout.py), and
the (prompt, first, second, label) pairs it trains on, swapped and identical-reply pairs included.
"""
from __future__ import annotations

from pathlib import Path

from ladder.errors import InputError
from ladder.params import IDENTICAL_LABELS, TIES

ARENA_COLUMNS = ("id", "prompt", "response_a", "response_b", "winner", "language", "split")


def load_arena(path: str | Path, ties: str) -> dict[str, list[dict]]:
    """Train and eval rows in id order; ties dropped or kept as a third label."""
    import polars as pl

    if ties not in TIES:
        raise ValueError(f"classifier.ties must be one of {', '.join(TIES)}, not {ties!r}")
    if not Path(path).is_file():
        raise InputError(f"{path}: file not found")
    from ladder.io import read_parquet
    from ladder.data.records import require_columns

    df = read_parquet(path)
    require_columns(df, ARENA_COLUMNS, path)
    if ties == "drop":
        df = df.filter(pl.col("winner") != "tie")
    df = df.with_columns(pl.col("language").fill_null("unknown"), pl.lit("arena").alias("table")).sort("id")
    return {s: df.filter(pl.col("split") == s).to_dicts() for s in ("train", "eval")}


def load_rows(arena: str | Path, preferences: str | Path, ties: str, share: float,
              rejected_ties: bool = False) -> tuple[dict[str, list[dict]], int]:
    """The arena rows and the judge's share of the preference pairs, per split in id order, and the number of
    preference ties dropped. With share 0 the preferences file is not read (the WSDM setting). With ties as a
    class and `rejected_ties`, two replies rejected in one turn are a tie row (ladder.data.holdout.judge_rows)."""
    from ladder.data.holdout import check_share, judge_rows
    from ladder.io import read_parquet

    data = load_arena(arena, ties)
    if check_share(share) == 0:
        return data, 0
    if not Path(preferences).is_file():
        raise ValueError(f"{preferences}: file not found (classifier.preference_share is {share})")
    try:
        pairs, dropped = judge_rows(read_parquet(preferences), share, rejected_ties and ties == "class")
    except ValueError as error:
        raise ValueError(f"{preferences}: {error}") from None
    for split in data:
        data[split] = sorted(data[split] + [r for r in pairs if r["split"] == split], key=lambda r: r["id"])
    return data, dropped


def training_pairs(rows: list[dict], labels: list[str], swap: bool, identical: float = 0.0,
                   identical_label: str = "each") -> list[tuple[str, str, str, int]]:
    """(prompt, first, second, label) per row, and the swapped copy with the label flipped when `swap`.
    `identical`: the share of rows (a stable hash of the id) that also give a reply against itself, so the
    judge learns that two equal replies are even: swapping alone never shows it such a pair, and it then
    favoured one position on them. `identical_label`: `each` labels the pair once as a win for each side,
    `tie` once as a tie; a two-label judge has no tie, so there it is always `each`. (In trials, ties kept the
    judge even on equal replies but it flipped more near-equal pairs with the order.)"""
    from ladder.data.records import unit_interval

    if identical_label not in IDENTICAL_LABELS:
        raise ValueError(f"classifier.identical_label must be each or tie, not {identical_label!r}")

    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}
    pairs = [(r["prompt"], r["response_a"], r["response_b"], labels.index(r["winner"])) for r in rows]
    if swap:
        pairs += [(r["prompt"], r["response_b"], r["response_a"], labels.index(flip[r["winner"]])) for r in rows]
    for r in rows:
        if identical and unit_interval("identical", r["id"]) < identical:
            reply = r["response_a"] if unit_interval("identical-reply", r["id"]) < 0.5 else r["response_b"]
            even = [labels.index("tie")] if identical_label == "tie" and "tie" in labels else [0, 1]
            pairs += [(r["prompt"], reply, reply, label) for label in even]
    return pairs
