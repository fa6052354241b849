"""Where the pipeline's files are: the deps and outs dvc.yaml declares, named once for the code.

dvc.yaml spells the same paths out (DVC reads no Python); tests/test_layout.py checks that each one here is, or
lies in, an output some stage declares, so neither side can move alone. Paths are relative to the repository
root, where DVC runs every stage.
"""
from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")                                   # fetch: <source>.parquet, one per source
CLEAN = Path("data/clean")                               # clean
CONVERSATIONS = CLEAN / "conversations.parquet"
PREFERENCES = CLEAN / "preferences.parquet"
FEEDBACK = CLEAN / "feedback.parquet"
ARENA = CLEAN / "arena.parquet"
SCORED_SFT = Path("data/scored/sft.parquet")             # score
SCORED_DPO = Path("data/scored/dpo.parquet")
GENERATIONS = Path("data/generations")                   # inference: prompts, responses, judgments, identical

BASE = Path("models/base")                               # fetch --model
JUDGE_BASE = Path("models/judge_base")
REWARD_BASE = Path("models/reward_base")
REWARD = Path("models/reward")                           # one folder per training stage, named for what it holds
SFT = Path("models/sft")
DPO = Path("models/dpo")
MERGED = Path("models/merged")
QUANTIZED = Path("models/quantized")
JUDGE = Path("models/judge")
FETCHED_MODELS = {"base": BASE, "judge": JUDGE_BASE, "reward": REWARD_BASE}  # `fetch --model <name>`

METRICS = Path("metrics")                                # <stage>.json: figures; DVC metrics: headlines, records
TIMINGS = METRICS / "timings"                            # <stage>.json: wall time and throughput, not metrics
PLOTS = Path("plots")                                    # score/, judge/, eval/: data behind `dvc plots show`
EXAMPLES = Path("reports/examples.json")
CHECKPOINTS = Path("checkpoints")                        # resume checkpoints: ignored by git and DVC
DVCLIVE = Path("dvclive")                                # <stage>/: training curves
# where outputs are written (temporaries of killed runs are swept from these: ladder.io.sweep_stale)
OUTPUT_FOLDERS = (Path("data"), Path("models"), METRICS, PLOTS, EXAMPLES.parent, DVCLIVE)


def metrics_file(stage: str) -> Path:
    return METRICS / f"{stage}.json"


def timings_file(stage: str) -> Path:
    return TIMINGS / f"{stage}.json"
