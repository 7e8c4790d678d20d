"""One build at a time per output folder: an exclusive ``flock`` on ``OUT/.lock``.

The lock is taken before the builder changes anything in ``OUT`` and held until the build ends.  A
second build into the same ``OUT`` is refused at once with the holder's pid (written into the lock
file).  The kernel releases a ``flock`` when its holder dies, so a killed build never blocks the
next one; the (empty) lock file stays and is not part of the build.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .config import BuildError

LOCK = ".lock"


def _holder(f) -> str:
    f.seek(0)
    pid = f.read().strip()
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def out_lock(out: Path):
    """Hold the exclusive lock of ``out`` (created if missing); BuildError if another build holds it."""
    out = Path(out)
    path = out / LOCK
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+", encoding="ascii")
    except OSError as exc:
        raise BuildError(f"cannot write to --out {out}: {exc.strerror or exc} ({exc.filename}); "
                         f"choose a writable directory") from None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"--out {out} is being written by another build-imagenet52p ({_holder(f)}, lock "
                             f"{path}); wait for it to finish, or choose another --out") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
