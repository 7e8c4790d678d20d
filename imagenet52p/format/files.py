"""File helpers of the on-disk format (docs/FORMAT.md): the one sha256 of a file, the one atomic
JSON writer.

:func:`file_sha256` is how the manifest's shard checksums are computed and re-checked (builder,
dataset, ``imagenet52p verify``).  :func:`write_json_atomic` writes ``manifest.json``,
``_info.json`` and the builder's resume records: a temporary file, fsync, then ``os.replace``, so a
crash leaves either the old file or the new one, never a partial one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def file_sha256(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path`` (read in ``bufsize`` chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        try:
            while chunk := f.read(bufsize):
                h.update(chunk)
        except OSError as exc:  # a read error names no file by itself
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    return h.hexdigest()


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON (indent 1, UTF-8, trailing newline) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
