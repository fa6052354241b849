"""A stage's outputs are replaced together or not at all, a killed run's temporaries are swept at the next start, and
the machine's refusals (no space, read-only) or a corrupt input are one line naming the path."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ladder import io
from ladder.errors import InputError
from ladder.io import FileSystemError, atomic_path, read_parquet, stage_outputs, staged_folder, sweep_stale, write_json

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def test_outputs_replace_the_old_ones_together_when_the_stage_ends(tmp_path):
    a, b = tmp_path / "metrics/a.json", tmp_path / "plots/b"
    write_json({"run": 1}, a)
    b.mkdir(parents=True)
    (b / "old.csv").write_text("old")
    with stage_outputs():
        write_json({"run": 2}, a)
        with atomic_path(b) as tmp:
            tmp.mkdir()
            (tmp / "new.csv").write_text("new")
        assert a.read_text() == '{\n  "run": 1\n}\n' and (b / "old.csv").exists()  # nothing moves before the end
    assert a.read_text() == '{\n  "run": 2\n}\n'
    assert [p.name for p in b.iterdir()] == ["new.csv"]
    assert leftovers(tmp_path) == []


def test_a_stage_that_fails_part_way_leaves_every_old_output_as_it_was(tmp_path):
    a, b = tmp_path / "eval.json", tmp_path / "elo.json"
    write_json({"run": 1}, a)
    write_json({"run": 1}, b)
    with pytest.raises(RuntimeError, match="the plots failed"):
        with stage_outputs():
            write_json({"run": 2}, a)
            with atomic_path(b):
                raise RuntimeError("the plots failed")
    assert a.read_text() == b.read_text() == '{\n  "run": 1\n}\n'
    assert leftovers(tmp_path) == []


def test_a_rename_that_fails_undoes_the_ones_made_before_it(tmp_path, monkeypatch):
    first, second, third = (tmp_path / f"{n}.json" for n in ("first", "second", "third"))
    write_json("old", first)
    write_json("old", third)
    real = os.replace

    def refuse_third(src, dst):  # the new third.json cannot be moved in; putting the old one back can
        if Path(dst) == third and ".tmp-" in Path(src).name:
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", refuse_third)
    with pytest.raises(FileSystemError, match=r"cannot replace .*third.json: Read-only file system"):
        with stage_outputs():
            for path in (first, second, third):
                write_json("new", path)
    monkeypatch.setattr(io.os, "replace", real)
    assert first.read_text() == third.read_text() == '"old"\n'
    assert not second.exists()  # had no old version: the new one is taken back
    assert leftovers(tmp_path) == []


def test_dvclive_folder_is_replaced_with_the_other_outputs(tmp_path):
    curves = tmp_path / "dvclive/sft"
    curves.mkdir(parents=True)
    (curves / "metrics.json").write_text("last run")
    with pytest.raises(KeyboardInterrupt):
        with stage_outputs():
            folder = staged_folder(curves)
            assert folder != curves and folder.is_dir()
            (folder / "metrics.json").write_text("this run")
            raise KeyboardInterrupt
    assert (curves / "metrics.json").read_text() == "last run"
    with stage_outputs():
        (staged_folder(curves) / "metrics.json").write_text("this run")
    assert (curves / "metrics.json").read_text() == "this run"
    assert staged_folder(curves) == curves  # outside a stage: the folder itself


def test_temporaries_of_a_killed_run_are_swept_and_an_old_output_put_back(tmp_path):
    gone, me = f"{dead_pid()}.12345", f"{os.getpid()}.{io.started(os.getpid())}"
    (tmp_path / "data/clean").mkdir(parents=True)
    half = tmp_path / f"data/clean/.feedback.parquet.tmp-{gone}-0123abcd"
    half.write_text("half written")
    folder = tmp_path / f"data/.scored.tmp-{gone}-0123abcd"
    (folder / "inner").mkdir(parents=True)
    moved_aside = tmp_path / f"data/clean/.arena.parquet.old-{gone}-0123abcd"
    moved_aside.write_text("the previous output")
    replaced = tmp_path / f"data/clean/.rejects.parquet.old-{gone}-0123abcd"
    replaced.write_text("older")
    (tmp_path / "data/clean/rejects.parquet").write_text("current")
    running = tmp_path / f"data/clean/.preferences.parquet.tmp-{me}-0123abcd"
    running.write_text("another stage is writing this")
    # this process's pid with another start time: a process that had the pid before (a container restarted)
    reused = tmp_path / f"data/clean/.arena.parquet.tmp-{os.getpid()}.1-0123abcd"
    reused.write_text("from before the restart")
    swept = sweep_stale([tmp_path / "data", tmp_path / "models"])
    assert sorted(p.name for p in swept) == sorted(p.name for p in (half, folder, moved_aside, replaced, reused))
    assert not half.exists() and not folder.exists() and running.exists()
    assert (tmp_path / "data/clean/arena.parquet").read_text() == "the previous output"
    assert (tmp_path / "data/clean/rejects.parquet").read_text() == "current"


def test_a_run_killed_while_writing_leaves_a_temporary_that_git_ignores_and_the_next_start_sweeps(tmp_path):
    code = ("import os, signal\nfrom ladder.io import atomic_path, stage_outputs\n"
            "with stage_outputs():\n    with atomic_path('models/judge') as tmp:\n        tmp.mkdir()\n"
            "        (tmp / 'weights').write_text('partial')\n        os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL
    [left] = (tmp_path / "models").iterdir()
    assert left.name.startswith(".judge.tmp-")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"models/{left.name}"], cwd=REPO)
    assert ignored.returncode == 0, "git would show a killed run's temporary as untracked"
    assert sweep_stale([tmp_path / "models"]) == [left] and not left.exists()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: No space left on device "
                               "(os error 28)"),
    OSError(errno.EROFS, "Error writing bytes to file. Detail: [errno 30] Read-only file system"),
], ids=["errno", "polars", "pyarrow"])
def test_the_machine_refusing_a_write_is_one_line_naming_the_output(tmp_path, error):
    with pytest.raises(FileSystemError) as raised:
        with atomic_path(tmp_path / "data/clean/arena.parquet"):
            raise error
    message = str(raised.value)
    assert message.startswith(f"cannot write {tmp_path / 'data/clean/arena.parquet'}: ") and "\n" not in message
    assert os.strerror(error.errno if isinstance(error, OSError) else errno.ENOSPC) in message
    assert isinstance(raised.value, InputError)  # what ladder.stage prints as one line
    assert leftovers(tmp_path) == []


def test_a_bug_inside_a_write_keeps_its_own_error(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.json"):
            raise KeyError("a bug")


@pytest.mark.parametrize("content", [b"", b"PAR1\x00\x01garbage", None], ids=["empty", "garbage", "truncated"])
def test_an_unreadable_parquet_input_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "feedback.parquet"
    pl.DataFrame({"a": list(range(1000))}).write_parquet(path)
    path.write_bytes(path.read_bytes()[:200] if content is None else content)
    with pytest.raises(InputError) as raised:
        read_parquet(path)
    assert str(raised.value).startswith(f"{path}: not a readable parquet file (") and "\n" not in str(raised.value)
    with pytest.raises(FileNotFoundError):
        read_parquet(tmp_path / "absent.parquet")


def test_what_waits_for_the_outputs_runs_only_once_they_are_in_place(tmp_path):
    done = []
    with pytest.raises(RuntimeError):
        with stage_outputs():
            write_json(1, tmp_path / "a.json")
            io.after_outputs(lambda: done.append("checkpoints removed"))
            raise RuntimeError("failed before the end")
    assert done == [] and not (tmp_path / "a.json").exists()
    with stage_outputs():
        write_json(1, tmp_path / "a.json")
        io.after_outputs(lambda: done.append((tmp_path / "a.json").exists()))
        assert done == []
    assert done == [True]


def test_a_rename_refused_outside_a_stage_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(io.os, "replace", lambda *_: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(FileSystemError, match="Permission denied"):
        write_json(1, tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error, says", [
    (OSError(errno.EROFS, "Read-only file system", "plots/eval/elo.json"), "plots/eval/elo.json: Read-only file system"),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
     "a file under {cwd}: No space left on device"),  # safetensors saving a trainer checkpoint
], ids=["oserror", "safetensors"])
def test_a_stage_says_the_machines_refusal_in_one_line_and_keeps_a_bugs_traceback(tmp_path, monkeypatch, error, says):
    from click.testing import CliRunner

    from ladder.stage import stage

    def body(params):
        raise error

    monkeypatch.chdir(tmp_path)
    command = stage("clean")(body)
    result = CliRunner().invoke(command, ["--params", str(REPO / "params.yaml")])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {says.format(cwd=tmp_path)}", result.output
    error = KeyError("a bug")
    result = CliRunner().invoke(stage("clean")(body), ["--params", str(REPO / "params.yaml")])
    assert isinstance(result.exception, KeyError)  # not caught: a bug keeps its traceback
