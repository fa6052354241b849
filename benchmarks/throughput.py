"""Benchmark: this machine's matmul peaks, and the share of them the training and generation stages get.

Run by hand after `dvc repro` (the stages read the pipeline's own inputs: models/base, data/scored, ...):
    python benchmarks/throughput.py [--repeats 3] [--stages sft,dpo,reward,classifier,inference] [--full]
                                    [--cpu-bf16 auto|on|off] [--set sft.packing=true ...] [--timeout 900]

1. Peaks: matrix products (square, 512 to 4096) on torch's threads, best of `repeats`, in float32 and in bfloat16
   only where a stage run here computes in it (cpu_bf16: `auto` takes it only on a CPU with native bfloat16;
   elsewhere oneDNN emulates it at a few GFLOP/s). A size is not tried once a product of the size before took
   over a second, so each peak is printed within seconds on any CPU.
2. Each stage runs as `python -m stages.<name>` in a scratch folder (its inputs hard-linked from the workspace,
   whose outputs it never touches), on the default params with the steps cut short unless --full:
   sft 8 steps, dpo 6, reward 40, classifier 60, inference 24 prompts of the base model. Train tokens/s comes
   from the stage's timing file (real tokens, padding not counted), `repeats` times; best and median printed.
   A run that takes over `timeout` seconds is stopped and reported as such.
3. Model FLOP/s = k * N * tokens/s, as a fraction of each peak: k = 4 for LoRA (forward, and the backward to
   the activations through frozen weights), 6 for full fine-tuning, 2 for generation. N counts the weights of
   the matrix products of every token, the non-embedding parameters (an LM head, tied to the embeddings or not,
   is left out, as in Kaplan et al.; TRL's fused head projects only labelled positions anyway). Attention's own
   products (QK^T, AV) are not counted either, so each fraction is a lower bound. DPO is also given at 6N: its
   reference forward (the adapter switched off) is 2N more per token, done inside each step.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ladder import paths  # noqa: E402
from ladder.stage import declared_inputs  # noqa: E402

# The steps of a short run: enough for a steady step time after the first steps' warm-up.
SHORT = {"sft": {"trainer": {"max_steps": 8}}, "dpo": {"trainer": {"max_steps": 6}},
         "reward": {"trainer": {"max_steps": 40}}, "classifier": {"trainer": {"max_steps": 60}},
         "inference": {"n_prompts": 24, "models": ["base"]}}
# (model folder the FLOPs are counted on, FLOPs per token and parameter)
WORK = {"sft": (paths.BASE, 4), "dpo": (paths.BASE, 4), "reward": (paths.REWARD_BASE, 6),
        "classifier": (paths.JUDGE_BASE, 6)}


def stage_precisions(names: list[str], cpu_bf16: str | None, settings: tuple[str, ...]) -> dict[str, str]:
    """What each training stage among `names` computes in on this CPU, with the params its runs get."""
    from ruamel.yaml import YAML

    from ladder.tools.peaks import precisions
    from ladder.tools.recipes import assign

    params = YAML(typ="safe", pure=True).load((ROOT / "params.yaml").read_text())
    for stage in WORK:
        params[stage]["cpu_bf16"] = cpu_bf16 or params[stage]["cpu_bf16"]
    for setting in settings:  # as run_stage gives them: after --cpu-bf16
        assign(params, setting)
    return precisions({stage: params[stage] for stage in names if stage in WORK})


def non_embedding_parameters(folder: Path) -> int:
    """Weights of the per-token matrix products: every nn.Linear but an LM head (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"))


def scratch_copy(stage: str, target: Path) -> None:
    """The stage's inputs as dvc.yaml declares them, hard-linked (a stage writes its outputs as new files, so the
    workspace stays as it is); the code runs from the workspace (PYTHONPATH)."""
    from ladder.io import require_outputs

    inputs = [d for d in declared_inputs(stage, ROOT / "dvc.yaml") if not d.startswith(("ladder/", "stages/"))]
    require_outputs(stage, *(ROOT / rel for rel in inputs))
    for rel in inputs:
        source, dest = ROOT / rel, target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, copy_function=os.link, dirs_exist_ok=True)
        else:
            os.link(source, dest)


def run_stage(stage: str, full: bool, cpu_bf16: str | None = None, settings: tuple[str, ...] = (),
              timeout: float | None = None) -> dict | None:
    """One run of the stage in a fresh scratch folder; its timing file (None when it ran over `timeout` seconds)."""
    from ruamel.yaml import YAML

    from ladder.tools.recipes import assign, merge

    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((ROOT / "params.yaml").read_text())
    if not full:
        merge(params[stage], copy.deepcopy(SHORT[stage]))
    if cpu_bf16 and stage in WORK:
        params[stage]["cpu_bf16"] = cpu_bf16
    for setting in settings:
        assign(params, setting)
    with tempfile.TemporaryDirectory(prefix=f"throughput-{stage}-") as tmp:
        work = Path(tmp)
        scratch_copy(stage, work)
        with open(work / "params.yaml", "w") as f:
            yaml.dump(params, f)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        try:
            done = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if done.returncode:
            raise click.ClickException(f"stages.{stage} failed:\n{done.stderr[-3000:]}")
        return json.loads((work / paths.timings_file(stage)).read_text())


def spread(values: list[float]) -> str:
    return f"best {max(values):8.1f}  median {statistics.median(values):8.1f}"


@click.command(help=__doc__)
@click.option("--repeats", default=3, show_default=True)
@click.option("--stages", "names", default="sft,dpo,reward,classifier,inference", show_default=True)
@click.option("--full", is_flag=True, help="the default steps, not a short run")
@click.option("--cpu-bf16", type=click.Choice(["auto", "on", "off"]), default=None,
              help="the training stages' cpu_bf16 (default: each stage's own in params.yaml)")
@click.option("--set", "settings", multiple=True, help="a param for the stages run, e.g. --set sft.packing=true")
@click.option("--timeout", default=900.0, show_default=True, help="seconds a stage run may take before it is stopped")
def main(repeats: int, names: str, full: bool, cpu_bf16: str | None, settings: tuple[str, ...], timeout: float) -> None:
    import torch

    from ladder.tools.peaks import matmul_peak
    from ladder.training.trainer import cpu_bf16_flags

    stages = names.split(",")
    precisions = stage_precisions(stages, cpu_bf16, settings)
    print(f"{torch.get_num_threads()} threads; native bfloat16: {', '.join(cpu_bf16_flags()) or 'none'}; "
          f"stages compute in {precisions}", flush=True)
    peaks = {"float32": matmul_peak(torch.float32, repeats)}
    print(f"matmul peak float32: {peaks['float32']:.1f} GFLOP/s", flush=True)
    if "bfloat16" in precisions.values():
        peaks["bfloat16"] = matmul_peak(torch.bfloat16, repeats)
        print(f"matmul peak bfloat16: {peaks['bfloat16']:.1f} GFLOP/s", flush=True)
    else:
        print("matmul peak bfloat16: not measured (no stage computes in it on this CPU)", flush=True)
    for stage in stages:
        runs = []
        for _ in range(repeats):
            runs.append(run_stage(stage, full, cpu_bf16, settings, timeout))
            if runs[-1] is None:
                break
        if None in runs:
            print(f"{stage:>10}: a run took over {timeout:.0f} s and was stopped (--timeout)", flush=True)
            continue
        if stage == "inference":
            for model in [m for m in runs[0] if isinstance(runs[0][m], dict)]:
                n = non_embedding_parameters(ROOT / paths.BASE)
                rates = [r[model]["tokens_per_second"] for r in runs]
                print(f"inference {model:>8}: generated tokens/s {spread(rates)}; 2N={2 * n / 1e6:.0f} MFLOP/token: "
                      f"{2 * n * max(rates) / 1e9 / peaks['float32']:.1%} of float32 peak (best)", flush=True)
            continue
        folder, k = WORK[stage]
        n = non_embedding_parameters(ROOT / folder)
        rates = [r["train_tokens_per_second"] for r in runs]
        gflops = [k * n * rate / 1e9 for rate in rates]
        shares = ", ".join(f"{max(gflops) / value:.1%} of {name} peak" for name, value in peaks.items())
        print(f"{stage:>10} ({precisions[stage]}): train tokens/s {spread(rates)}; padding "
              f"{runs[0]['train_padding_share']:.1%}; {k}N = {k * n / 1e6:.0f} MFLOP/token -> GFLOP/s "
              f"{spread(gflops)}; best = {shares}", flush=True)
        if stage == "dpo":  # the reference model's forward is DPO's own work too: 2N more per token
            print(f"{'':>10}  with the reference forward, 6N: {6 * n * max(rates) / 1e9 / peaks['float32']:.1%} of "
                  f"float32 peak", flush=True)


if __name__ == "__main__":
    main()
