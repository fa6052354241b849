"""The model card saved with the merged model: what it is made of (base, data, each training step's settings)
and how it scored. Its own module, apart from ladder/training/merging.py, because it reads the preference-method table
and only the merge stage writes a card.
"""
from __future__ import annotations

import json

from ladder.params import all_sources
from ladder.training.preference import method


def model_card(fetch: dict, sft: dict, dpo: dict, merge: dict, metrics: dict) -> str:
    """What the model is made of and how it scored: the data, the params, the headline numbers; no secrets
    (nothing from the environment is read here)."""
    sources = ", ".join(f"{name} ({spec['format']})" for name, spec in all_sources(fetch).items())
    lines = [
        "# ladder chat model", "",
        f"Base model: `{fetch['base_model']}`" + (f" @ `{fetch['base_revision']}`" if fetch.get("base_revision") else ""),
        f"Data sources: {sources}.", "",
        "Made by the ladder pipeline: LoRA SFT on reward-filtered conversations, then preference tuning from the",
        "SFT model, both adapters merged into this standalone model.", "",
        "## Settings", "",
        f"- SFT: chat template `{sft['chat_template']}`, max length {sft['max_length']}, LoRA {json.dumps(sft['lora'])},"
        f" trainer {json.dumps(sft['trainer'])}",
        f"- Preference tuning: method `{dpo['method']}` {json.dumps(method(dpo['method']).options(dpo))},"
        f" beta {dpo['beta']}, LoRA {json.dumps(dpo['lora'])}, trainer {json.dumps(dpo['trainer'])}",
        f"- Merged in float32, saved as `{merge['dtype']}`; generation defaults {json.dumps(merge['generation'])}", "",
        "## Metrics", "",
        *[f"- {stage}: {json.dumps(values)}" for stage, values in metrics.items()], ""]
    return "\n".join(lines)
