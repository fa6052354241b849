"""Atomic, deterministic writes: a crashed stage leaves nothing DVC could mistake for a result.

Every output is written to a temporary sibling (`.<name>.tmp-<owner>-<random>`, the owner being the writing process's
pid and start time) and renamed into place. While a stage runs (ladder.stage opens `stage_outputs()` around it), the
renames wait until the stage has written everything, and then replace all its outputs together: a stage that fails
part way leaves the previous outputs as they were, never a mix of new and old (a kill in the instant of the renames
themselves aside). A run killed before its renames leaves temporary siblings whose process is gone; the next stage
to start sweeps them (`sweep_stale`), and git and DVC ignore them meanwhile. Only the main process of a distributed
run writes outputs (`is_main_process`).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ladder.errors import InputError

# Failures of the machine, not of the code: the stage says them in one line naming the path
SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)\.(?P<start>\d+)-[0-9a-f]{8}$")
_pending: list[tuple[Path, Path]] | None = None  # (temporary, target) of the running stage, None outside a stage
_after: list[Callable[[], None]] = []             # what the running stage does once its outputs are in place


def process_rank() -> tuple[int, int]:
    """(rank, number of processes) of this process, from the variables torchrun, accelerate, DeepSpeed
    and MPI set; (0, 1) when it runs alone. Read before any process group exists."""
    def first(names: tuple[str, ...], default: int) -> int:
        return next((int(os.environ[n]) for n in names if os.environ.get(n)), default)

    return (first(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"), 0),
            first(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"), 1))


def is_main_process() -> bool:
    """Only the main process writes models, metrics, plots and dvclive files."""
    return process_rank()[0] == 0


class FileSystemError(InputError):
    """A path the stage could not read or write for a reason of the machine (no space, read-only, permission):
    one line naming the path and the cause."""


def started(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22), or None where it is gone or
    there is no /proc: with the pid, it names a process even after the pid is reused (a container restarted)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def temporary_sibling(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}.{started(os.getpid()) or 0}-{uuid.uuid4().hex[:8]}")


def remove(path: Path) -> None:
    """Remove a file, link or folder; one already gone (swept by another process) is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():  # unlink on a read-only file system refuses even a missing file
        path.unlink(missing_ok=True)


def system_cause(error: BaseException, folder: Path | None = None) -> str | None:
    """The machine's reason behind `error` (its errno, as the OS says it), or None for anything else. Libraries
    wrap the errno their own way (polars and safetensors as "(os error 28)" in a message, pyarrow as "[errno 28]");
    torch.save's RuntimeError says nothing usable, so one raised where `folder`'s disk is full is said to be that."""
    seen = error
    while seen is not None:
        code = getattr(seen, "errno", None)
        if not isinstance(code, int):
            match = re.search(r"(?:os error|errno) (\d+)", str(seen), re.IGNORECASE)
            code = int(match.group(1)) if match else None
        if code in SYSTEM_ERRNOS:
            return os.strerror(code)
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, RuntimeError) and folder is not None and folder.is_dir() \
            and shutil.disk_usage(folder).free < 2**20:
        return f"{os.strerror(errno.ENOSPC)} ({shutil.disk_usage(folder).free} bytes free)"
    return None


def _replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each temporary onto its target, the old targets moved aside first; if any rename fails, the ones
    already made are undone and the old targets put back."""
    done: list[tuple[Path, Path | None]] = []
    for tmp, target in pairs:
        old = None
        try:
            if target.exists() or target.is_symlink():
                old = temporary_sibling(target, "old")
                os.replace(target, old)
            os.replace(tmp, target)
        except OSError as error:
            if old is not None and old.exists():
                os.replace(old, target)
            for moved, previous in reversed(done):
                remove(moved)
                if previous is not None:
                    os.replace(previous, moved)
            raise FileSystemError(f"cannot replace {target}: {system_cause(error) or error}") from None
        done.append((target, old))
    for _, old in done:
        if old is not None:
            remove(old)


@contextmanager
def stage_outputs() -> Iterator[None]:
    """Within this block, outputs written with atomic_path / staged_folder are moved into place together when it
    ends without an error, and none of them otherwise (their temporaries are removed); then what `after_outputs`
    was given runs."""
    global _pending, _after
    outer, _pending, outer_after, _after = _pending, [], _after, []
    mine, then = _pending, _after
    try:
        yield
        _replace_together(mine)
        mine.clear()
        for action in then:
            action()
    finally:
        for tmp, _ in mine:
            remove(tmp)
        _pending, _after = outer, outer_after


def after_outputs(action: Callable[[], None]) -> None:
    """Run `action` once the running stage's outputs are in place (at once outside a stage): a stage removes its
    resume checkpoints only when nothing can fail any more."""
    if _pending is None:
        action()
    else:
        _after.append(action)


def _stage(tmp: Path, target: Path) -> None:
    """Hand a written temporary to the running stage (or rename it now, outside a stage)."""
    if _pending is None:
        try:
            _replace_together([(tmp, target)])
        finally:
            remove(tmp)  # moved in, or left over by a rename that failed
        return
    for i, (earlier, same) in enumerate(_pending):
        if same == target:  # written twice in one stage: the later one wins
            remove(earlier)
            del _pending[i]
            break
    _pending.append((tmp, target))


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` (file or folder) to write; it becomes `target` when the stage's outputs
    are replaced (at once outside a stage). A write the machine refused is a FileSystemError naming `target`."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FileSystemError(f"cannot write {target}: {system_cause(error) or error}") from None
    tmp = temporary_sibling(target)
    try:
        yield tmp
    except BaseException as error:
        remove(tmp)
        cause = system_cause(error, target.parent) if isinstance(error, Exception) else None
        if cause:
            raise FileSystemError(f"cannot write {target}: {cause}") from None
        raise
    _stage(tmp, target)


def staged_folder(target: str | Path) -> Path:
    """An empty folder to fill over the course of the stage (dvclive's), which replaces `target` with the stage's
    other outputs; outside a stage, `target` itself."""
    target = Path(target)
    if _pending is None:
        return target
    tmp = temporary_sibling(target)
    tmp.mkdir(parents=True)
    _stage(tmp, target)
    return tmp


def sweep_stale(folders: list[str | Path]) -> list[Path]:
    """Remove the temporaries of killed runs under `folders` (their process is gone): a `.tmp-` one is half
    written; an `.old-` one is a previous output moved aside, put back if nothing replaced it. Returns what was
    removed or restored."""
    swept = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                match = _TEMPORARY.match(name)
                if not match or _alive(int(match.group("pid")), int(match.group("start"))):
                    continue
                path, target = Path(root) / name, Path(root) / match.group("name")
                try:
                    if match.group("kind") == "old" and not (target.exists() or target.is_symlink()):
                        os.replace(path, target)
                    else:
                        remove(path)
                except FileNotFoundError:  # another process swept it first
                    continue
                swept.append(path)
            dirs[:] = [d for d in dirs if not _TEMPORARY.match(d)]
    return swept


def _alive(pid: int, start: int) -> bool:
    """Whether the process that made a temporary still runs: its pid, started when it was (where /proc tells)."""
    now = started(pid)
    if now is not None or Path("/proc/self/stat").exists():
        return now is not None and (start == 0 or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def readable(path: str | Path, kind: str, read: Callable[[Path], Any]) -> Any:
    """`read(path)`, with a file it cannot read (truncated, empty, not `kind`) said in one line naming it rather than
    the reader's traceback, and the machine's refusal said as that. A missing file stays a FileNotFoundError."""
    import polars as pl
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "No such file", str(path))
    try:
        return read(path)
    # polars panics on some corrupt files (a column chunk shorter than its row count) instead of raising
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, pa.ArrowException, OSError, ValueError) as error:
        cause = system_cause(error)
        if cause:
            raise FileSystemError(f"cannot read {path}: {cause}") from None
        raise InputError(f"{path}: not a readable {kind} file ({' '.join(str(error).split()) or type(error).__name__})"
                         ) from None


def read_parquet(path: str | Path):
    """A parquet table (polars), through `readable`."""
    import polars as pl

    return readable(path, "parquet", pl.read_parquet)


def require_outputs(stage: str, *outputs: str | Path) -> None:
    """For a script run by hand after the pipeline (a benchmark): stop with one line, not the loader's traceback,
    when an output of `stage` is not there yet."""
    import click

    missing = [str(p) for p in outputs if not Path(p).exists()]
    if missing:
        raise click.ClickException(f"{', '.join(missing)} not found: run `dvc repro {stage}` first")


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded, inside dicts and lists too: metrics files then hold the same bytes on every rerun
    (the last bits of a float sum depend on the order of operations)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def write_json(obj: Any, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def write_parquet(df, target: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Polars frame to parquet with fixed settings, so equal frames give equal bytes; `metadata`: the file's
    key-value metadata (ladder.data.records.REMOVED_BY)."""
    with atomic_path(target) as tmp:
        df.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True, metadata=metadata)
