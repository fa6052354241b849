"""fetch: bring one data source or one starting model into the pipeline.

Reads   params.yaml `fetch` (sources: local files by `path`; hub_sources: a `hub` id + pinned `revision` [+ `split`];
        base_model / judge_model / reward_model with their revisions, seed for tiny models), HF_TOKEN from the
        environment or .env.
Writes  data/raw/<source>.parquet with the source's own columns (one DVC stage per source), or
        models/base (the chat model), models/judge_base (the judge's backbone) and models/reward_base (the
        reward model's backbone) as plain transformers folders (safetensors, tokenizer, chat template) with
        ladder-source.json naming the model and revision they hold.

Usage:
    python -m stages.fetch --source chai
    python -m stages.fetch --model base        # or: --model judge, --model reward
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from ladder import paths
from ladder.errors import InputError
from ladder.stage import stage

log = logging.getLogger("ladder.fetch")
# The judge and the reward model have a backbone each: switching the judge must not retrain the reward model.
MODEL_TARGETS = paths.FETCHED_MODELS


def fetch_source(spec: dict, name: str, out_dir: str | Path = paths.RAW) -> Path:
    from ladder.data.sources import read_source, write_raw

    frame, json_columns = read_source(spec, name)
    target = Path(out_dir) / f"{name}.parquet"
    write_raw(frame, json_columns, target)
    where = spec.get("path") or f"{spec.get('hub')}@{spec.get('revision')}"
    log.info("source %s (%s): %d rows, %d columns from %s -> %s", name, spec.get("format"), frame.height,
             frame.width, where, target)
    if json_columns:
        log.info("source %s: columns of mixed types kept as JSON text: %s", name, ", ".join(json_columns))
    return target


def fetch_model(params: dict, which: str) -> Path:
    from ladder.data.models import materialize
    from ladder.data.sources import hf_token

    spec, revision = params[f"{which}_model"], params[f"{which}_revision"]
    if not spec:
        raise InputError(f"fetch.{which}_model is empty")
    target = Path(MODEL_TARGETS[which])
    materialize(spec, target, revision=revision, seed=params["seed"],
                token=None if spec.startswith(("bundled:", "tiny:")) else hf_token())
    log.info("model %s: %s%s -> %s", which, spec, f"@{revision}" if revision else "", target)
    return target


@stage("fetch")
@click.option("--source", help="name of a source in params fetch.sources or fetch.hub_sources")
@click.option("--model", type=click.Choice(sorted(MODEL_TARGETS)), help="which starting model to fetch")
def main(all_params: dict, source: str | None, model: str | None) -> None:
    if bool(source) == bool(model):
        raise click.UsageError("give exactly one of --source NAME or --model base|judge|reward")
    params = all_params["fetch"]
    start = time.perf_counter()
    if source:
        from ladder.params import all_sources

        sources = all_sources(params)
        if source not in sources:
            raise click.BadParameter(f"{source!r} is not in fetch.sources or fetch.hub_sources "
                                     f"({', '.join(sources) or 'none'})", param_hint="--source")
        fetch_source(sources[source], source)
    else:
        fetch_model(params, model)
    log.info("done in %.1f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
