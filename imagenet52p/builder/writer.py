"""Writing one shard: deterministic tar bytes, temp name, fsync, rename.

Every member header is fixed (:func:`imagenet52p.format.tar.tar_header`: POSIX/pax ``tarfile``
header, mtime 0, uid/gid 0, empty uname/gname, mode 0o644), members come in the planned sample
order (``.jpg``, ``.cls``, ``.json`` per sample) and the archive ends like ``tarfile`` ends one
(two zero blocks, padded to a 10240-byte record).  So the bytes depend only on the planned samples and the options, never on
the worker, the time, or the user running the build.

:func:`write_shard` is the unit of parallel work: a module-level function of a picklable
:class:`ShardTask`, returning a record (sample count, bytes, sha256, per-class counts, what was
skipped or converted).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..format import tar_end, tar_header, tar_pad
from .config import BuildError
from .images import BadImage, prepare_image
from .sources import UNREADABLE, Source, read_source

#: Testing aid: seconds to sleep after each sample (lets tests kill a build mid-shard).
THROTTLE_ENV = "IMAGENET52P_BUILD_THROTTLE"


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


class _Sink:
    """Writes and hashes byte strings in a background thread, so that reading and checking the next
    images overlaps writing and hashing this one (file writes and sha256 release the GIL)."""

    def __init__(self, f):
        self.f, self.digest, self.bytes, self.error = f, hashlib.sha256(), 0, None
        self.q: queue.Queue = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (parts := self.q.get()) is not None:
            if self.error is None:
                try:
                    for part in parts:
                        self.f.write(part)
                        self.digest.update(part)
                except BaseException as exc:  # reported by put()/close() in the calling thread
                    self.error = exc

    def put(self, parts: list[bytes]) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(parts)
        self.bytes += sum(len(p) for p in parts)

    def close_quietly(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        self.q.put(None)
        self.thread.join()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _no_report(images: int, nbytes: int) -> None:
    pass


def write_shard(task: ShardTask, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``task``'s shard atomically; return its record.  Raises BuildError on a write failure,
    or on the first bad image with ``on_error="fail"``.  ``progress(1, bytes)`` is called after each
    sample with the bytes it added to the shard (0 for a skipped bad image); it only reads counts."""
    t0, report = time.perf_counter(), progress or _no_report
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    final = Path(task.out) / task.rel
    tmp = final.with_name(final.name + ".tmp")
    source_bytes = 0
    per_class: dict[str, int] = {}
    skipped, converted = [], []
    sink = None
    try:
        with open(tmp, "wb") as f:
            sink = _Sink(f)
            for key, label, src, in1k, voc in task.samples:
                try:
                    raw = read_source(src)
                    jpg, w, h, reason = prepare_image(raw, task.resize, task.quality, task.decode_check)
                except (BadImage, OSError) as exc:
                    why = str(exc) if isinstance(exc, BadImage) else f"{UNREADABLE} ({exc})"
                    if task.on_error == "fail":
                        raise BuildError(f"bad image {src.rel} (under --root): {why}; "
                                         f"rerun with --on-error skip to skip and list such files") from None
                    skipped.append({"source": src.rel, "split": task.split, "reason": why})
                    report(1, 0)
                    continue
                source_bytes += len(raw)
                if reason is not None and reason != "resize":
                    converted.append({"source": src.rel, "split": task.split, "reason": reason})
                cls = str(label).encode()
                meta = sample_json(src.wnid, in1k, voc, src.rel, w, h, reason)
                before = sink.bytes
                sink.put([tar_header(f"{key}.jpg", len(jpg)), jpg, tar_pad(len(jpg)),
                          tar_header(f"{key}.cls", len(cls)) + cls + tar_pad(len(cls))
                          + tar_header(f"{key}.json", len(meta)) + meta + tar_pad(len(meta))])
                per_class[src.wnid] = per_class.get(src.wnid, 0) + 1
                report(1, sink.bytes - before)
                if throttle:
                    time.sleep(throttle)
            sink.put([tar_end(sink.bytes)])
            sink.close()
        os.replace(tmp, final)  # no fsync: a kill leaves the page cache intact, and a shard damaged by
        # a power loss fails its checksum on resume or in `imagenet52p verify`, and is rebuilt
    except OSError as exc:
        if sink is not None and sink.thread.is_alive():
            sink.close_quietly()
        tmp.unlink(missing_ok=True)
        raise BuildError(f"cannot write shard {final}: {exc.strerror or exc} "
                         f"(check that the output directory is writable and has free space)") from None
    except BaseException:
        if sink is not None and sink.thread.is_alive():
            sink.close_quietly()
        tmp.unlink(missing_ok=True)
        raise
    return {"split": task.split, "index": task.index, "path": task.rel, "num_samples": sum(per_class.values()),
            "bytes": sink.bytes, "sha256": sink.digest.hexdigest(), "plan_sha256": task.plan_sha256,
            "per_class": dict(sorted(per_class.items())), "skipped": skipped, "converted": converted,
            "source_bytes": source_bytes, "seconds": time.perf_counter() - t0}
