"""The role-play preference pairs the judge learns from, and the same pairs held out of DPO's training.

One stable hash decides both, so the judge (classifier stage) and the DPO data (score stage) can never
disagree about which pair belongs to whom. The hash is taken over the pair's source row, not the pair
id: the pairs of one source row (chai-dpo's several rejected replies, a conversation's swipes) share
their prompt and their chosen reply, and splitting them would let DPO train on the judge's prompt and
chosen reply under another pair id.

Each pair becomes a judge row laid out as inference lays out the generated replies: the prompt field is
the conversation so far, one "role: content" line per message (ladder.training.reward_model.role_lines), and the
chosen reply sits first or second by a second hash of the pair id, so neither position wins by default.
"""
from __future__ import annotations

import polars as pl

from ladder.data.records import require_columns, unit_interval

SHARE_SALT, ORDER_SALT = "judge-share", "judge-order"
PREFERENCE_COLUMNS = ("id", "source", "row", "prompt", "chosen", "rejected", "split")


def check_share(share: float) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"classifier.preference_share must be a number from 0 to 1, not {share!r}")
    return float(share)


def in_judge_share(source: str, row: str, share: float) -> bool:
    """Whether the pairs of this source row belong to the judge (share 0: none, 1: all)."""
    return unit_interval(SHARE_SALT, source, row) < check_share(share)


def judge_share_mask(pairs: pl.DataFrame, share: float) -> pl.Series:
    """True for the pairs of `pairs` (a preferences table) whose source row belongs to the judge."""
    check_share(share)
    return pl.Series("judge", [in_judge_share(s, r, share) for s, r in zip(pairs["source"], pairs["row"])],
                     dtype=pl.Boolean)


def judge_rows(pairs: pl.DataFrame, share: float, rejected_ties: bool = False) -> tuple[list[dict], int]:
    """The judge's share of `pairs` as judge rows (id order), and how many ties (chosen == rejected) were
    dropped: a pair with nothing to choose between teaches the judge nothing. With `rejected_ties`, two
    different replies the user rejected in one turn (chai-dpo's rejected list, a run of swipes) also make a row,
    labelled a tie: neither was kept. A turn is a source row and a prompt length: a chai conversation's swipes
    of different turns share the row, never the prompt. Without them a judge only ever sees a good reply against a
    bad one, and on two replies of one kind it had learnt nothing to go by but their positions."""
    from ladder.training.reward_model import role_lines

    require_columns(pairs, PREFERENCE_COLUMNS)
    rows, ties = [], 0
    rejected: dict[tuple[str, str, int], list[dict]] = {}
    for pair in pairs.filter(judge_share_mask(pairs, share)).sort("id").iter_rows(named=True):
        if pair["chosen"].strip() == pair["rejected"].strip():
            ties += 1
            continue
        rejected.setdefault((pair["source"], pair["row"], len(pair["prompt"])), []).append(pair)
        chosen_first = unit_interval(ORDER_SALT, pair["id"]) < 0.5
        a, b = (pair["chosen"], pair["rejected"]) if chosen_first else (pair["rejected"], pair["chosen"])
        rows.append(judge_row(pair, role_lines(pair["prompt"]), a, b, "model_a" if chosen_first else "model_b"))
    if rejected_ties:
        rows += [judge_row(first, role_lines(first["prompt"]), first["rejected"], second["rejected"], "tie",
                           f"{first['id']}+{second['id']}")
                 for group in rejected.values() for first, second in zip(group, group[1:])
                 if first["rejected"].strip() != second["rejected"].strip()]
    return sorted(rows, key=lambda r: r["id"]), ties


def judge_row(pair: dict, prompt: str, a: str, b: str, winner: str, row_id: str | None = None) -> dict:
    return {"id": row_id or pair["id"], "table": "preferences", "prompt": prompt, "response_a": a, "response_b": b,
            "winner": winner, "language": "unknown", "split": pair["split"]}


def judge_holdout(pairs: pl.DataFrame, extra: pl.DataFrame, share: float) -> pl.Series:
    """True for the train pairs DPO must not see: the judge's share of the preference table (`pairs`) and the
    pairs of `extra` (self pairs, source "self:<source>") made from one of those source rows."""
    mask = judge_share_mask(pairs, share)
    judged = pairs.filter(mask)
    keys = set(zip(judged["source"], judged["row"]))
    held = mask.to_list() + [
        (source.removeprefix("self:"), row) in keys for source, row in zip(extra["source"], extra["row"])]
    splits = pairs["split"].to_list() + extra["split"].to_list()
    return pl.Series("held_out", [h and s == "train" for h, s in zip(held, splits)], dtype=pl.Boolean)
