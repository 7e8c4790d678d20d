"""Writing one shard: deterministic tar bytes, temp name, fsync, rename.

Every member header is fixed (POSIX/pax ``tarfile`` header, mtime 0, uid/gid 0, empty
uname/gname, mode 0o644), members come in the planned sample order (``.jpg``, ``.cls``,
``.json`` per sample) and the archive ends like ``tarfile`` ends one (two zero blocks, padded to
a 10240-byte record).  So the bytes depend only on the planned samples and the options, never on
the worker, the time, or the user running the build.

:func:`write_shard` is the unit of parallel work: a module-level function of a picklable
:class:`ShardTask`, returning a record (sample count, bytes, sha256, per-class counts, what was
skipped or converted).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .config import BuildError
from .images import BadImage, prepare_image
from .sources import Source, read_source

BLOCK = 512
RECORD = tarfile.RECORDSIZE  # 20 blocks
#: Testing aid: seconds to sleep after each sample (lets tests kill a build mid-shard).
THROTTLE_ENV = "IMAGENET52P_BUILD_THROTTLE"


def tar_member(name: str, data: bytes) -> bytes:
    """Header + data + padding of one regular-file member with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    pad = (-len(data)) % BLOCK
    return header + data + b"\0" * pad


def tar_end(offset: int) -> bytes:
    """The end-of-archive blocks for an archive of ``offset`` bytes so far."""
    end = offset + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-end) % RECORD)


class Sample(NamedTuple):
    key: str
    label: int  # index in the class set
    source: Source
    imagenet1k_index: int
    voc_class: str | None


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    rel: str  # shard path relative to out
    out: str  # output directory
    samples: tuple  # of Sample
    plan_sha256: str
    resize: int | None
    quality: int
    decode_check: bool
    on_error: str


def sample_json(wnid: str, in1k: int, voc: str | None, source: str, w: int, h: int, reason: str | None) -> bytes:
    return json.dumps({"wnid": wnid, "imagenet1k_index": in1k, "voc_class": voc, "source": source,
                       "width": w, "height": h, "reencoded": reason}, ensure_ascii=False).encode()


def write_shard(task: ShardTask) -> dict:
    """Write ``task``'s shard atomically; return its record.  Raises BuildError on a write failure,
    or on the first bad image with ``on_error="fail"``."""
    t0 = time.perf_counter()
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    final = Path(task.out) / task.rel
    tmp = final.with_name(final.name + ".tmp")
    digest, offset, source_bytes = hashlib.sha256(), 0, 0
    per_class: dict[str, int] = {}
    skipped, converted = [], []
    try:
        with open(tmp, "wb") as f:
            for key, label, src, in1k, voc in task.samples:
                try:
                    raw = read_source(src)
                    jpg, w, h, reason = prepare_image(raw, task.resize, task.quality, task.decode_check)
                except (BadImage, OSError) as exc:
                    why = str(exc) if isinstance(exc, BadImage) else f"cannot read ({exc})"
                    if task.on_error == "fail":
                        raise BuildError(f"bad image {src.rel} (under --root): {why}; "
                                         f"rerun with --on-error skip to skip and list such files") from None
                    skipped.append({"source": src.rel, "split": task.split, "reason": why})
                    continue
                source_bytes += len(raw)
                if reason is not None and reason != "resize":
                    converted.append({"source": src.rel, "split": task.split, "reason": reason})
                chunk = (tar_member(f"{key}.jpg", jpg) + tar_member(f"{key}.cls", str(label).encode())
                         + tar_member(f"{key}.json", sample_json(src.wnid, in1k, voc, src.rel, w, h, reason)))
                f.write(chunk)
                digest.update(chunk)
                offset += len(chunk)
                per_class[src.wnid] = per_class.get(src.wnid, 0) + 1
                if throttle:
                    time.sleep(throttle)
            end = tar_end(offset)
            f.write(end)
            digest.update(end)
            offset += len(end)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"cannot write shard {final}: {exc.strerror or exc} "
                         f"(check that the output directory is writable and has free space)") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"split": task.split, "index": task.index, "path": task.rel, "num_samples": sum(per_class.values()),
            "bytes": offset, "sha256": digest.hexdigest(), "plan_sha256": task.plan_sha256,
            "per_class": dict(sorted(per_class.items())), "skipped": skipped, "converted": converted,
            "source_bytes": source_bytes, "seconds": time.perf_counter() - t0}


def file_sha256(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
