"""clean: every raw source to the unified records, filtered, deduplicated, split and mixed.

Reads   data/raw/<source>.parquet for each source in params `fetch.sources` and `fetch.hub_sources` (their
        `format`), params `clean`.
Writes  data/clean/{conversations,preferences,feedback,arena,rejects}.parquet (each table's metadata says how
        many records each param's filter removed, for the stages after it), metrics/records.json (each table's
        train and eval records and the rejected source rows: the figures DVC compares), metrics/clean.json (per
        source its rows and reasons for rejects, `removed_by` per table, a warning for each source a filter
        emptied), metrics/timings/clean.json.

Order: parse (ladder.data.formats) -> filters -> exact dedup across sources (first source in params wins)
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
from ladder.data.cleaning import clean, with_values
from ladder.stage import stage

log = logging.getLogger("ladder.clean")


@stage("clean")
@click.option("--raw-dir", default=str(paths.RAW), show_default=True)
@click.option("--out-dir", default=str(paths.CLEAN), show_default=True)
def main(params: dict, raw_dir: str, out_dir: str) -> None:
    from ladder.io import write_json, write_parquet
    from ladder.params import all_sources
    from ladder.data.records import removed_by_metadata
    from ladder.data.sources import read_raw

    start = time.perf_counter()
    raw = {name: (spec["format"], read_raw(Path(raw_dir) / f"{name}.parquet"))
           for name, spec in all_sources(params["fetch"]).items()}
    tables, metrics, timings = clean(raw, params["clean"])
    for warning in metrics["warnings"]:
        log.warning("%s", warning)
    for name, df in tables.items():
        removed = with_values(metrics["removed_by"].get(name, {}), params)
        write_parquet(df, Path(out_dir) / f"{name}.parquet", metadata=removed_by_metadata(removed))
        log.info("%s: %d records", name, df.height)
    write_json(metrics, paths.metrics_file("clean"))
    write_json({**metrics["records"], "rejected_rows": metrics["rejected_rows"]}, paths.metrics_file("records"))
    write_json({"seconds": round(time.perf_counter() - start, 3), "parse": timings}, paths.timings_file("clean"))


if __name__ == "__main__":
    main()
