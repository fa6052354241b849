"""Benchmark: how many pairs per second the trained judge scores on this machine.

Run by hand after `dvc repro classifier` (it reads models/judge and the arena eval split):
    python benchmarks/judge_throughput.py [--repeats 3]

Scores the eval pairs through the judge API (ladder.judge.classifier.load_judge(...).score), best and median of
`repeats` runs, for:
  eval pairs, TTA          both orders per pair, as the stage and inference score them
  eval pairs, one order    the (a, b) order only
  long pairs, TTA          the same pairs with each response repeated until the text fills max_length tokens
and, for scale, the machine's float32 matmul speed on a MiniLM-sized linear layer (4096 x 384 -> 1536).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--repeats", default=3, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
def main(repeats: int, batch_size: int) -> None:
    import torch

    from ladder import paths
    from ladder.judge.classifier import load_judge
    from ladder.io import require_outputs
    from ladder.judge.rows import load_arena

    require_outputs("classifier", paths.JUDGE, paths.ARENA)

    judge = load_judge(paths.JUDGE)
    rows = load_arena(paths.ARENA, judge.settings["ties"])["eval"]
    long_rows = [{**r, "response_a": (r["response_a"] + " ") * 40, "response_b": (r["response_b"] + " ") * 40}
                 for r in rows]
    print(f"torch threads {torch.get_num_threads()}, max_length {judge.settings['max_length']}, "
          f"field budget {judge.settings.get('field_budget')}, {len(rows)} pairs")
    for label, data, tta in (("eval pairs, TTA", rows, True), ("eval pairs, one order", rows, False),
                             ("long pairs, TTA", long_rows, True)):
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            judge.score(data, tta=tta, batch_size=batch_size)
            rates.append(len(data) / (time.perf_counter() - start))
        print(f"{label:<24} best {max(rates):6.1f} pairs/s   median {statistics.median(rates):6.1f} pairs/s", flush=True)
    x, w = torch.randn(4096, 384), torch.randn(1536, 384)
    speeds = []
    for _ in range(repeats * 10):
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        speeds.append(2 * 4096 * 384 * 1536 / (time.perf_counter() - start) / 1e9)
    print(f"{'float32 matmul':<24} best {max(speeds):6.1f} GFLOP/s median {statistics.median(speeds):6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
