"""Training stages under `accelerate launch`: the command each launcher setting builds, the shipped
configs, and sft and the judge trained by two CPU processes (gloo), which write what one process writes."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from safetensors import safe_open

from ladder.launch import accelerate_settings, command
from ladder.data.models import materialize
from ladder.params import load_params, read_yaml
from ladder.errors import InputError
from ladder.tools.recipes import merge
from ladder.training.trainer import process_rank

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs/accelerate"


def test_python_runs_the_stage_in_this_interpreter():
    cmd, env = command("sft", {"launcher": "python"}, "p.yaml")
    assert cmd == [sys.executable, "-m", "stages.sft", "--params", "p.yaml"] and env == {}


def test_accelerate_launches_with_the_config_file():
    cmd, env = command("dpo", {"launcher": "accelerate", "accelerate_config": str(CONFIGS / "fsdp.yaml")}, "p.yaml")
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml"),
                       "-m", "stages.dpo", "--params", "p.yaml"] and env == {}


def test_cpu_processes_start_with_torchrun_without_mpirun_and_with_accelerate_with_it(monkeypatch):
    params = {"launcher": "accelerate", "accelerate_config": str(CONFIGS / "cpu.yaml")}
    monkeypatch.setattr(shutil, "which", lambda name: None)
    cmd, env = command("classifier", params, "params.yaml")
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert env == {"ACCELERATE_USE_CPU": "true"}
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert command("classifier", params, "params.yaml")[0][2] == "accelerate.commands.launch"


@pytest.mark.parametrize("stage", ["reward", "classifier"])
@pytest.mark.parametrize("config", ["fsdp", "zero3"])
def test_stages_that_save_whole_models_refuse_sharding(stage, config):
    with pytest.raises(ValueError, match="data-parallel only"):
        command(stage, {"launcher": "accelerate", "accelerate_config": str(CONFIGS / f"{config}.yaml")}, "p.yaml")


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(InputError, match="sft.accelerate_config is not set"):
        command("sft", {"launcher": "accelerate", "accelerate_config": ""}, "p.yaml")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        command("sft", {"launcher": "accelerate", "accelerate_config": str(tmp_path / "nowhere.yaml")}, "p.yaml")
    with pytest.raises(ValueError, match="not a training stage"):
        command("merge", {}, "p.yaml")


def test_shipped_configs_load_as_accelerate_reads_them():
    kinds = {p.stem: accelerate_settings(p) for p in CONFIGS.glob("*.yaml")}
    assert {k: v["distributed_type"] for k, v in kinds.items()} == {
        "ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED", "cpu": "MULTI_CPU"}
    assert kinds["zero3"]["deepspeed_config"]["zero_stage"] == 3 and kinds["zero3"]["deepspeed_config"]["zero3_save_16bit_model"]
    assert kinds["fsdp"]["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert kinds["cpu"]["num_processes"] == 2 and kinds["cpu"]["use_cpu"]


def test_rank_comes_from_the_launchers_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert process_rank() == (0, 1)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert process_rank() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert process_rank() == (1, 2)


def workspace(root: Path, launcher: str) -> Path:
    """A project folder with what sft and classifier read: tiny models, a few rows, the smoke params."""
    root.mkdir()
    shutil.copytree(REPO / "configs", root / "configs")
    materialize("tiny:llama", root / "models/base", seed=0)
    materialize("tiny:bert", root / "models/judge_base", seed=0)
    rng = random.Random(0)
    conversations = [{"id": f"c{i:02d}", "split": "eval" if i % 4 == 0 else "train", "messages": [
        {"role": "system", "content": "You are Aria, a librarian."},
        {"role": "user", "content": f"Tell me about book {i}."},
        {"role": "assistant", "content": f"Book {i} is about {rng.choice(['maps', 'tides', 'owls'])}."}]}
        for i in range(16)]
    (root / "data/scored").mkdir(parents=True)
    pl.DataFrame(conversations).write_parquet(root / "data/scored/sft.parquet")
    words = ["light", "water", "heat", "patience", "shape", "rhythm"]
    arena = [{"id": f"a{i:02d}", "prompt": f"Question {i}?", "response_a": " ".join(rng.choices(words, k=4)),
              "response_b": " ".join(rng.choices(words, k=6)), "winner": rng.choice(["model_a", "model_b"]),
              "language": "English", "split": "eval" if i % 4 == 0 else "train"} for i in range(16)]
    (root / "data/clean").mkdir(parents=True)
    pl.DataFrame(arena).write_parquet(root / "data/clean/arena.parquet")
    preferences = [{"id": f"p{i:02d}", "source": "chai_dpo", "row": f"r{i:02d}", "split": "eval" if i % 4 == 0 else "train",
                    "prompt": [{"role": "user", "content": f"Tell me about map {i}."}],
                    "chosen": f"Map {i} shows the {rng.choice(words)}. Shall we go?", "rejected": "ok"} for i in range(16)]
    pl.DataFrame(preferences).write_parquet(root / "data/clean/preferences.parquet")
    params = load_params(REPO / "params.yaml")
    merge(params, read_yaml(REPO / "recipes/smoke.yaml"))
    chosen = {"launcher": launcher, "accelerate_config": "configs/accelerate/cpu.yaml"}
    merge(params, {"sft": {**chosen, "eval_conversations": 4, "trainer": {"max_steps": 2, "per_device_train_batch_size": 2}},
                   "classifier": {**chosen, "trainer": {"max_steps": 2, "per_device_train_batch_size": 2}}})
    (root / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    return root


def launch(root: Path, stage: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "ladder.launch", stage], cwd=root, capture_output=True, text=True,
                          env=env | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def files(root: Path, folders: list[str]) -> set[str]:
    return {p.relative_to(root).as_posix() for f in folders for p in (root / f).rglob("*") if p.is_file()}


def tensors(path: Path) -> dict[str, tuple]:
    with safe_open(str(path), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return {launcher: workspace(root / launcher, launcher) for launcher in ("python", "accelerate")}


@pytest.mark.parametrize("stage, outputs, weights", [
    ("sft", ["models/sft", "dvclive/sft", "metrics"], "models/sft/adapter_model.safetensors"),
    ("classifier", ["models/judge", "dvclive/classifier", "metrics", "plots"], "models/judge/head.safetensors")])
def test_two_cpu_processes_write_what_one_process_writes(runs, stage, outputs, weights):
    single, double = runs["python"], runs["accelerate"]
    alone, together = launch(single, stage), launch(double, stage)
    assert "process 0 of 1" in alone
    assert "process 0 of 2" in together and "process 1 of 2" in together and "torch.distributed.run" in together
    assert files(double, outputs) == files(single, outputs) and files(single, outputs)
    assert tensors(double / weights) == tensors(single / weights)
    metrics = {"sft": "metrics/sft.json", "classifier": "metrics/judge.json"}[stage]
    one, two = (json.loads((r / metrics).read_text()) for r in (single, double))
    assert one.keys() == two.keys()
    count = "steps" if stage == "sft" else "eval_rows"
    timings = f"metrics/timings/{stage}.json"
    assert [json.loads((r / timings).read_text())["processes"] for r in (single, double)] == [1, 2]
    assert one[count] == two[count] > 0


def _state(pid: int) -> str | None:
    """A process's state letter (Z: a zombie, already dead), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _launch(tmp_path: Path, child_code: str) -> tuple[subprocess.Popen, int]:
    """ladder.launch's run_child starting `child_code` in a process of its own; returns the launcher and the child's
    pid once the child has started (it writes its pid to child.pid)."""
    import time

    pidfile = tmp_path / "child.pid"
    pidfile.unlink(missing_ok=True)
    child = f"import os; open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n{child_code}"
    launcher = subprocess.Popen([sys.executable, "-c", "import sys; from ladder.launch import run_child; "
                                 f"sys.exit(run_child([sys.executable, '-c', {child!r}]))"],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    for _ in range(200):
        if pidfile.is_file() and pidfile.read_text():
            return launcher, int(pidfile.read_text())
        time.sleep(0.05)
    raise AssertionError("the child never started")


def test_a_launch_killed_outright_takes_its_stage_with_it(tmp_path):
    import time

    launcher, child = _launch(tmp_path, "import time; time.sleep(120)")
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    for _ in range(100):
        if _state(child) in (None, "Z"):
            break
        time.sleep(0.05)
    assert _state(child) in (None, "Z"), "the stage trains on as an orphan"


def test_a_launch_passes_signals_on_and_exits_with_the_stages_status(tmp_path):
    handled = tmp_path / "got.txt"
    launcher, _ = _launch(tmp_path, "import signal, sys, time\n"
                          f"def stop(n, f): open({str(handled)!r}, 'w').write(str(n)); sys.exit(3)\n"
                          "signal.signal(signal.SIGTERM, stop)\ntime.sleep(120)")
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 3
    assert handled.read_text() == str(int(signal.SIGTERM))
    launcher, _ = _launch(tmp_path, "import time; time.sleep(120)")  # no handler: the signal ends it
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=30) == 128 + signal.SIGINT
