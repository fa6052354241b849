"""clean: every raw source to the unified records, filtered, deduplicated, split and mixed.

Reads   data/raw/<source>.parquet for each source in params `fetch.sources` (their `format`), params `clean`.
Writes  data/clean/{conversations,preferences,feedback,arena,rejects}.parquet, metrics/clean.json,
        metrics/timings/clean.json.

Order: parse (ladder.formats) -> filters -> exact dedup across sources (first source in params wins)
-> eval split by a stable hash of the source row, widened so no eval prompt is also in train -> per-source
mix of the train rows. A source row that ends in no table is a reject, with the reason it was dropped.

Usage:
    python -m stages.clean
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from ladder import paths
from ladder.cleaning import clean
from ladder.stage import stage

log = logging.getLogger("ladder.clean")


@stage("clean")
@click.option("--raw-dir", default=str(paths.RAW), show_default=True)
@click.option("--out-dir", default=str(paths.CLEAN), show_default=True)
def main(params: dict, raw_dir: str, out_dir: str) -> None:
    from ladder.io import write_json, write_parquet
    from ladder.sources import read_raw

    start = time.perf_counter()
    raw = {name: (spec["format"], read_raw(Path(raw_dir) / f"{name}.parquet"))
           for name, spec in params["fetch"]["sources"].items()}
    tables, metrics, timings = clean(raw, params["clean"])
    for name, df in tables.items():
        write_parquet(df, Path(out_dir) / f"{name}.parquet")
        log.info("%s: %d records", name, df.height)
    write_json(metrics, paths.metrics_file("clean"))
    write_json({"seconds": round(time.perf_counter() - start, 3), "parse": timings}, paths.timings_file("clean"))


if __name__ == "__main__":
    main()
