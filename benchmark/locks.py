"""The per-cell lock: ``RESULTS/<cell id>.lock``, an exclusive ``fcntl.flock`` held while a process runs the
cell, holding that process's pid.  A second process never waits: it skips the cell (counted ``running``,
naming the holder's pid) and goes on with the next one.  The file is removed when the cell is released, so
a finished results folder holds no lock files; a lock whose file was removed (or replaced) between
``open`` and ``flock`` is retried on the new file, so two processes never both hold one cell.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def exclusive(path: str | Path):
    """Wait for, then hold, an exclusive ``flock`` on the file ``path`` (created with its folder): the one
    blocking lock of the benchmark (the experiment records, a shared pretrained model, the submitted jobs'
    record), where a second process waits instead of skipping as it does for a cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_path(results_dir: str | Path, cell_id: str) -> Path:
    return Path(results_dir) / f"{cell_id}{LOCK_SUFFIX}"


def _holder_pid(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


def _acquire(path: Path):
    """The open, locked file of ``path``, or ``(None, pid)`` when another process holds it."""
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None, _holder_pid(path)
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            return f, None
        f.close()  # released and removed by its holder in between: lock the file now at that path


@contextlib.contextmanager
def cell_lock(results_dir: str | Path, cell_id: str):
    """Yields None when this process holds the cell, else the holder's pid (as text): then do not run it."""
    path = lock_path(results_dir, cell_id)
    f, pid = _acquire(path)
    if f is None:
        yield pid
        return
    try:
        yield None
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        f.close()


def holder(results_dir: str | Path, cell_id: str) -> str | None:
    """The pid of the process running ``cell_id`` now, or None when no process holds it."""
    path = lock_path(results_dir, cell_id)
    if not path.is_file():
        return None
    with cell_lock(results_dir, cell_id) as pid:
        return pid
