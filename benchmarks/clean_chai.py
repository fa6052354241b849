"""Benchmark: clean 200,000 chai_feedback-shaped conversations (about three times tiendung/chai).

Run by hand, not by the tests:
    python benchmarks/clean_chai.py [--rows 200000]

Each measurement is repeated 3 times (best and median reported; this machine's timings vary by up to 2x
from run to run) and runs in its own process, so its peak memory (max RSS, generated data included) is its own:
  polars-parse   the project's chai_feedback parser (ladder/data/chai_feedback.py)
  polars-clean   the whole clean stage on that source: parse, filters, dedup, split, mix, rejects, metrics
  per-row-parse  a straightforward per-row Python parser of the same rules, for comparison
Before timing, the two parsers are checked to give the same conversations and pairs on 3,000 rows.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

USER = "Anonymous user"
REPEATS = 3
PARAMS = {"seed": 0, "eval_fraction": 0.1, "min_turns": 3, "min_message_chars": 1, "max_message_chars": 8000,
          "min_conversation_chars": 20, "max_conversation_chars": 40000, "sft_requires_thumbs_up": True,
          "swipe_pairs": True, "arena_languages": [], "dedup": True, "mix": {"chai": 1.0}}


def generate(n: int, seed: int = 0) -> pl.DataFrame:
    """Conversations of 3-20 messages (greeting, then user and bot turns, 5% of bot turns swiped first)."""
    rng = np.random.default_rng(seed)
    words = "the a you I me we go see look dark light sword castle tea rain smile softly whisper laugh why " \
            "how door moon star river song old new".split()
    texts = pl.Series([" ".join(rng.choice(words, size=rng.integers(3, 40))) for _ in range(4000)])
    counts = rng.integers(3, 21, size=n)
    row = np.repeat(np.arange(n), counts)
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    flat = pl.DataFrame({"row": row, "pos": pos, "bot": rng.integers(0, 500, size=n)[row],
                         "swiped": (pos % 2 == 0) & (pos > 0) & (rng.random(pos.size) < 0.05),
                         "text": texts.gather(rng.integers(0, len(texts), size=pos.size))})
    bot = pl.format("Character {}", "bot")
    flat = flat.select("row", pl.when(pl.col("pos") % 2 == 1).then(pl.lit(USER))
                       .when(pl.col("swiped")).then(bot + " (deleted)").otherwise(bot).alias("name"), "text")
    conv = flat.group_by("row", maintain_order=True).agg(pl.struct("name", "text").alias("conversation"))
    return conv.select(pl.format("chai{}", "row").alias("_id"), "conversation",
                       pl.Series("thumbs_up", rng.random(n) < 0.55))


def per_row_parse(df: pl.DataFrame, source: str = "chai") -> dict[str, pl.DataFrame]:
    """The obvious implementation of the same rules: a Python loop over rows and messages, then the
    same output tables (ids included) as the project's parser."""
    from ladder.data.records import SCHEMAS, stable_id

    conversations, pairs, feedback = [], [], []
    for row in df.iter_rows(named=True):
        msgs = row["conversation"] or []
        if not msgs or msgs[0]["name"] in (None, USER) or msgs[0]["name"].endswith(" (deleted)"):
            continue
        bot, messages, pending, ok, row_pairs = msgs[0]["name"], [], [], True, []
        for pos, m in enumerate(msgs):
            text = (m["text"] or "").replace("\r\n", "\n").strip()
            if m["name"] == bot + " (deleted)":
                pending.append((pos, text))
                continue
            role = "user" if m["name"] == USER else "assistant" if m["name"] == bot else None
            if role is None or not text:
                ok = False
                break
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n\n" + text
                pending = []
                continue
            if role == "assistant" and messages:  # chosen: this whole turn, known once the row is read
                row_pairs += [(p, list(messages), len(messages), r) for p, r in pending if r]
            pending = []
            messages.append({"role": role, "content": text})
        if not ok:
            continue
        rid = row["_id"]
        conversations.append({"id": stable_id(source, rid, "conversations", 0), "source": source, "row": rid,
                              "messages": messages, "thumbs_up": row["thumbs_up"]})
        if row["thumbs_up"] is not None:
            feedback.append({"id": stable_id(source, rid, "feedback", 0), "source": source, "row": rid,
                             "messages": messages, "label": float(row["thumbs_up"])})
        pairs += [{"id": stable_id(source, rid, "preferences", p), "source": source, "row": rid, "prompt": prompt,
                   "chosen": messages[turn]["content"], "rejected": rejected}
                  for p, prompt, turn, rejected in row_pairs if rejected != messages[turn]["content"]]
    return {"conversations": pl.DataFrame(conversations, schema=SCHEMAS["conversations"]),
            "preferences": pl.DataFrame(pairs, schema=SCHEMAS["preferences"]),
            "feedback": pl.DataFrame(feedback, schema=SCHEMAS["feedback"])}


def check_same(df: pl.DataFrame) -> None:
    from ladder.data.formats import parse_source

    parsed = parse_source(df, "chai", "chai_feedback", PARAMS)
    for name, table in per_row_parse(df).items():
        assert parsed.tables[name].equals(table), name


def measure(kind: str, n: int) -> dict:
    from ladder.data.formats import parse_source
    from ladder.data.cleaning import clean

    df = generate(n)
    messages = int(df["conversation"].list.len().sum())
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        if kind == "polars-parse":
            parse_source(df, "chai", "chai_feedback", PARAMS)
        elif kind == "polars-clean":
            clean({"chai": ("chai_feedback", df)}, PARAMS)
        else:
            per_row_parse(df)
        times.append(time.perf_counter() - start)
    best, median = min(times), sorted(times)[len(times) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"kind": kind, "rows": n, "messages": messages, "best_s": round(best, 2), "median_s": round(median, 2),
            "rows_per_s": round(n / best), "peak_rss_gib": round(peak, 2)}


@click.command(help=__doc__)
@click.option("--rows", "n", default=200_000, show_default=True, help="conversations to generate")
@click.option("--one", type=click.Choice(["polars-parse", "polars-clean", "per-row-parse"]), hidden=True,
              help="measure this one kind in this process (what the benchmark runs each measurement as)")
def main(n: int, one: str | None) -> None:
    if one:
        print(json.dumps(measure(one, n)))
        return
    check_same(generate(3000, seed=1))
    print("parsers agree on 3,000 rows", flush=True)
    results = {}
    for kind in ("polars-parse", "polars-clean", "per-row-parse"):
        out = subprocess.run([sys.executable, __file__, "--one", kind, "--rows", str(n)], capture_output=True,
                             text=True, check=True).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
        r = results[kind]
        print(f"{kind:14s} {r['rows']:>8,d} rows ({r['messages']:,d} messages): best {r['best_s']:6.2f} s, "
              f"median {r['median_s']:6.2f} s, {r['rows_per_s']:>9,d} rows/s, peak RSS {r['peak_rss_gib']:.2f} GiB",
              flush=True)
    for stat in ("best_s", "median_s"):
        speedup = results["per-row-parse"][stat] / results["polars-parse"][stat]
        print(f"parse speed-up over the per-row parser ({stat.split('_')[0]} of {REPEATS}): {speedup:.1f}x")

if __name__ == "__main__":
    main()
