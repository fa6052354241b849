"""merge: base + SFT adapter + DPO adapter into one standalone model, checked against the unmerged stack.

Reads   models/base, models/sft, models/dpo, metrics/{sft,dpo}.json, data/scored/sft.parquet (eval conversations
        for the parity check), params `merge` (dtype, parity_dtype, parity_conversations, generation) and, for the model
        card, `fetch.base_model`, `fetch.base_revision`, `fetch.sources`, `fetch.hub_sources`, `sft`, `dpo`.
Writes  models/merged (weights in merge.dtype, tokenizer with the training chat template, generation_config.json
        with the serving settings, README.md model card), metrics/merge.json (max |logit difference| between the
        merged model and base + adapters, both computed in merge.parity_dtype), metrics/timings/merge.json.

Merging happens in float32 and the result is cast to `merge.dtype` (a 16-bit type for serving, or float32);
quantization is a later stage that starts from this model, never the reverse. The parity check computes both
models in `merge.parity_dtype`, float64 by default (each cast in place and back, which is exact), so it measures
what the merge changed, not how a CPU's float32 kernels happen to round: float32 logits of one and the same model
differ between CPUs, and between two layouts of the same weights, by more than the merge does. float64 holds the
model at 8 bytes per parameter for the check (about 96 GB for a 12B model): large models check in float32.

Usage:
    python -m stages.merge
"""
from __future__ import annotations

import json
import logging
import time

from ladder import paths
from ladder.training.merging import max_logit_difference, merged_from, stacked
from ladder.training.model_card import model_card
from ladder.stage import stage

log = logging.getLogger("ladder.merge")


@stage("merge")
def main(params: dict) -> None:
    import polars as pl
    from transformers import AutoTokenizer, GenerationConfig

    from ladder.io import atomic_path, read_parquet, write_json
    from ladder.data.records import require_rows

    merge = params["merge"]
    start = time.perf_counter()
    scored = read_parquet(paths.SCORED_SFT)
    require_rows(scored, paths.SCORED_SFT, "merge's parity check", {"eval": 1})
    eval_rows = scored.filter(pl.col("split") == "eval").sort("id")
    tokenizer = AutoTokenizer.from_pretrained(paths.DPO)
    stack = stacked(paths.BASE, paths.SFT, paths.DPO)
    model = merged_from(stack, merge["dtype"])
    conversations = eval_rows["messages"].to_list()[:merge["parity_conversations"]]
    difference = max_logit_difference(stack, model, tokenizer, conversations, merge["parity_dtype"])
    metrics = {s: json.loads(paths.metrics_file(s).read_text()) for s in ("sft", "dpo")}
    with atomic_path(paths.MERGED) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(do_sample=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **merge["generation"]).save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(params["fetch"], params["sft"], params["dpo"], merge, metrics))
    write_json({"dtype": merge["dtype"], "parity_dtype": merge["parity_dtype"],
                "parity_conversations": len(conversations),
                "max_abs_logit_difference": float(f"{difference:.3e}")}, paths.metrics_file("merge"))
    write_json({"seconds": round(time.perf_counter() - start, 2)}, paths.timings_file("merge"))
    log.info("merged as %s; max |logit difference| %.3e", merge["dtype"], difference)


if __name__ == "__main__":
    main()
