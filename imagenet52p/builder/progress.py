"""The build's progress bar: it moves per image and shows images/s and MB/s (docs/builder.md, "Progress").

Definitions:

* ``total``: every planned sample of every split.  ``initial``: the samples of the shards a resumed
  build expects to keep (a record with this shard's plan hash and a file of the recorded size),
  counted as done before any work starts.  If such a shard fails its checksum and is rewritten,
  its images stay counted once (its bytes are counted as written).
* the count: each shard's writer reports ``(shard, images, bytes)`` after every sample (bad images
  skipped with ``--on-error skip`` count as done, with 0 bytes).  In worker processes the reports
  are summed and sent to the main process through a queue at most every :data:`REPORT_S` seconds;
  when a shard's record arrives its count is completed from the record (and later reports for it
  are dropped), so the bar ends at ``total`` exactly.
* ``img/s``: tqdm's own (smoothed) rate of the count, without ``initial``.
* ``MB/s``: bytes written into shards by this run (tar headers and padding included) divided by the
  seconds since the bar started; 1 MB = 10**6 bytes.

The bar only reads counts after the bytes are written: it never changes a byte of the output, and
with ``progress=False`` no queue is made and no report is sent.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

#: Seconds between two reports of a worker process (the main process reports every image).
REPORT_S = 0.1

_QUEUE = None  # in a worker process: the queue to the main process (set by init_worker)


def init_worker(q) -> None:
    """Pool initializer: remember the main process's report queue."""
    global _QUEUE
    _QUEUE = q


class Reporter:
    """One shard's per-image callback ``(images, bytes)``: sums the counts and passes them on as
    ``sink(rel, images, bytes)`` at most every ``every_s`` seconds (the first at once)."""

    def __init__(self, sink: Callable[[str, int, int], None], rel: str, every_s: float):
        self.sink, self.rel, self.every_s = sink, rel, every_s
        self.images = self.bytes = 0
        self.due = 0.0

    def __call__(self, images: int, nbytes: int) -> None:
        self.images += images
        self.bytes += nbytes
        now = time.monotonic()
        if now >= self.due:
            self.sink(self.rel, self.images, self.bytes)
            self.images = self.bytes = 0
            self.due = now + self.every_s


def reporter(rel: str, sink: Callable[[str, int, int], None] | None) -> Reporter | None:
    """The callback for shard ``rel``: to ``sink`` in this process, else to the worker's queue, else None."""
    if sink is not None:
        return Reporter(sink, rel, 0.0)
    if _QUEUE is not None:
        return Reporter(_to_queue, rel, REPORT_S)
    return None


def _to_queue(rel: str, images: int, nbytes: int) -> None:
    _QUEUE.put((rel, images, nbytes))


def matches_record(task, record: dict | None, out: Path) -> bool:
    """The shard's record is of its plan and its file has the recorded size: the cheap half of the reuse test
    (``run.run_task`` adds the checksum)."""
    if record is None or record.get("plan_sha256") != task.plan_sha256:
        return False
    path = Path(out) / task.rel
    return path.is_file() and path.stat().st_size == record.get("bytes")


def expected_kept(tasks: dict, records: dict[str, dict], out: Path) -> set[str]:
    """Shards (paths relative to ``out``) that :func:`matches_record`: the ones a resumed build is expected to
    keep (the checksum is checked later)."""
    return {t.rel for ts in tasks.values() for t in ts if matches_record(t, records.get(t.rel), out)}


class BuildProgress:
    """The bar of one build (see the module docstring); ``enabled=False`` shows nothing."""

    def __init__(self, tasks: dict, records: dict[str, dict], out: Path, enabled: bool, workers: int):
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.sizes = {t.rel: len(t.samples) for ts in tasks.values() for t in ts}
        self.precounted = expected_kept(tasks, records, out) if enabled else set()
        self.finished: set[str] = set()
        self.images: dict[str, int] = {}  # shard -> images reported so far (unfinished shards)
        self.bytes: dict[str, int] = {}  # shard -> bytes reported so far (unfinished shards)
        self.written = 0
        self.queue = mp.get_context("spawn").Queue() if enabled and workers > 1 else None
        self.bar = tqdm(total=sum(self.sizes.values()), initial=sum(self.sizes[r] for r in self.precounted),
                        unit="img", disable=not enabled, dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def sink(self) -> Callable[[str, int, int], None] | None:
        """The report function for shards written in this process (None when disabled)."""
        return self.add if self.enabled else None

    def add(self, rel: str, images: int, nbytes: int) -> None:
        """A report: ``images`` more samples of shard ``rel`` done, ``nbytes`` more bytes written."""
        if rel in self.finished:
            return  # arrived after the shard's record, which already completed its count
        self.bytes[rel] = self.bytes.get(rel, 0) + nbytes
        self.written += nbytes
        if rel not in self.precounted:
            self.images[rel] = self.images.get(rel, 0) + images
            self.bar.update(images)
        self._postfix()

    def shard_done(self, rec: dict) -> None:
        """Complete shard ``rec["path"]``'s count from its record."""
        rel = rec["path"]
        self.finished.add(rel)
        if not rec["reused"]:
            self.written += rec["bytes"] - self.bytes.pop(rel, 0)
        if rel not in self.precounted:
            self.bar.update(self.sizes[rel] - self.images.pop(rel, 0))
        self._postfix()

    def _postfix(self) -> None:
        if self.enabled:
            mbs = self.written / max(time.perf_counter() - self.t0, 1e-9) / 1e6
            self.bar.set_postfix_str(f"{mbs:.1f} MB/s", refresh=False)

    def drain(self) -> None:
        """Apply every report waiting in the queue."""
        while self.queue is not None:
            try:
                self.add(*self.queue.get_nowait())
            except queue.Empty:
                return

    def follow(self, results: Iterable[dict]) -> Iterator[dict]:
        """Yield the shard records of ``results`` (a pool's ``imap_unordered`` when there is a queue),
        applying the workers' reports while waiting for each."""
        if self.queue is None:
            yield from results
            return
        while True:
            try:
                rec = results.next(timeout=REPORT_S)
            except mp.TimeoutError:
                self.drain()
                continue
            except StopIteration:
                break
            self.drain()
            yield rec

    def close(self) -> None:
        self.bar.close()
        if self.queue is not None:
            self.queue.close()
            self.queue.cancel_join_thread()
