"""What other readers make of a build's shards: per epoch, does timm's ``wds/`` reader or plain
webdataset repeat samples, miss samples, or leave a (rank, worker) without a shard?

Pure Python (no torch, no webdataset): the rules below are read from the installed code and
checked against it by ``tests/data/test_readers.py``.  Definitions, for a split of ``N`` samples
in shards ``lengths`` (``_info.json`` ``shard_lengths``), ``W`` ranks, ``K`` DataLoader workers per
rank (0 counts as 1), ``G = W * K`` global workers, global worker id ``g = rank * K + worker``:

* **timm** (``timm/data/readers/reader_wds.py``, ``ReaderWds``): ``_split_by_node_and_worker``
  gives worker ``g`` the shards at positions ``g, g + G, ...`` of the shard list, which in
  training is first reordered by ``detshuffle2`` (webdataset's ``filters._shuffle`` with buffer
  500, initial 100, ``random.Random(seed + epoch)``; replayed by :func:`timm_shard_order`).
  ``_num_samples_per_worker`` is ``n = N / G``, rounded up when training or ``W > 1``, and in
  training further up to a multiple of the batch size.  When training or ``W > 1``, ``__iter__``
  uses ``with_epoch(n)``: webdataset's ``DataPipeline.iterator`` replays the worker's shards until
  ``n`` samples (each replay yields each of its ``S`` samples once), and yields nothing for a
  worker with no shard.  So a worker with ``S > 0`` yields ``n``: ``max(0, n - S)`` repeats and
  ``max(0, S - n)`` misses.  Otherwise (validation on one rank) each worker reads its shards once:
  exact.  Under DDP (``W > 1``) a worker with no shard makes its rank yield fewer batches than the
  others: the ranks' collectives no longer match and training or validation **hangs**.
* **webdataset** (``webdataset/shardlists.py``: ``split_by_node`` then ``split_by_worker``, as
  ``WebDataset(urls, nodesplitter=split_by_node)`` adds them; rank and world size from
  ``RANK``/``WORLD_SIZE`` or ``torch.distributed``, ``utils.pytorch_worker_info``): rank ``r`` gets
  positions ``r, r + W, ...``, its worker ``k`` every ``K``-th of those.  Every shard is read once
  per epoch (no repeats, no misses); a worker with no shard yields nothing (``WebDataset``'s default
  ``empty_check=True`` raises "No samples found" there), and under DDP ranks with different sample
  counts need ``with_epoch`` (which then repeats or misses as timm does) or they hang.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

#: timm's ``detshuffle2`` defaults as ``ReaderWds`` uses them (``shard_shuffle_size``, initial).
TIMM_SHARD_BUFFER, TIMM_SHARD_INITIAL = 500, 100
#: timm ``train.py``'s default ``--seed``.
TIMM_SEED = 42


def timm_shard_order(n_shards: int, seed: int = TIMM_SEED, epoch: int = 0) -> list[int]:
    """The shard positions in the order timm's training pipeline hands them out in ``epoch``:
    webdataset ``filters._shuffle(range(n_shards), 500, 100, random.Random(seed + epoch))``."""
    rng = random.Random(seed + epoch)
    data, buf, out = iter(range(n_shards)), [], []

    def pick() -> int:
        k = rng.randint(0, len(buf) - 1)
        sample = buf[k]
        buf[k] = buf[-1]
        buf.pop()
        return sample

    initial = min(TIMM_SHARD_INITIAL, TIMM_SHARD_BUFFER)
    for sample in data:
        buf.append(sample)
        if len(buf) < TIMM_SHARD_BUFFER:
            nxt = next(data, None)
            if nxt is not None:
                buf.append(nxt)
        if len(buf) >= initial:
            out.append(pick())
    while buf:
        out.append(pick())
    return out


@dataclass
class Prediction:
    """One reader's epoch of one split.  ``available[r][k]``: samples in the shards of rank ``r``'s
    worker ``k``; ``yielded[r][k]``: samples it yields.  ``repeats``: yields beyond each sample's
    first; ``misses``: samples never yielded; ``empty``: (rank, worker) pairs with no shard."""

    reader: str
    world_size: int
    workers: int
    num_samples: int
    available: list[list[int]]
    yielded: list[list[int]]
    repeats: int = 0
    misses: int = 0
    empty: list[tuple[int, int]] = field(default_factory=list)
    hangs: bool = False

    @property
    def exact(self) -> bool:
        """Every sample once, and under DDP equal ranks; for webdataset also no empty worker (its
        default ``empty_check`` raises there; timm's empty workers show up as misses or hangs)."""
        empty = self.empty and self.reader == "webdataset"
        return not (self.repeats or self.misses or empty or self.hangs or self.uneven)

    @property
    def uneven(self) -> bool:
        """Under DDP, ranks yielding different numbers of samples."""
        return self.world_size > 1 and len({sum(r) for r in self.yielded}) > 1

    def verdict(self) -> str:
        """``exact`` | ``hangs: ...`` | ``repeats N, misses M`` | ``empty: ...`` (see module docstring)."""
        if self.exact:
            return "exact"
        gw = f"{len(self.empty)} of {self.world_size}x{self.workers} (rank, worker) without a shard"
        if self.hangs:
            return f"hangs: {gw}"
        parts = []
        if self.repeats:
            parts.append(f"repeats {self.repeats}")
        if self.misses:
            parts.append(f"misses {self.misses}")
        if self.empty and self.reader == "webdataset":
            parts.append(f"empty: {gw}")
        if self.uneven:
            per_rank = [sum(r) for r in self.yielded]
            parts.append(f"uneven: ranks get {min(per_rank)}..{max(per_rank)} samples (hangs under DDP)")
        return ", ".join(parts)


def _assign(order: list[int], lengths: list[int], world_size: int, workers: int, by_node_first: bool
            ) -> list[list[int]]:
    """Samples per (rank, worker): timm's ``islice(g, G)`` or webdataset's node-then-worker slices."""
    avail = [[0] * workers for _ in range(world_size)]
    for pos, shard in enumerate(order):
        if by_node_first:
            r, k = pos % world_size, (pos // world_size) % workers
        else:
            g = pos % (world_size * workers)
            r, k = divmod(g, workers)
        avail[r][k] += lengths[shard]
    return avail


def _shard_counts(order_len: int, world_size: int, workers: int, by_node_first: bool) -> list[list[int]]:
    return _assign(list(range(order_len)), [1] * order_len, world_size, workers, by_node_first)


def timm_samples_per_worker(num_samples: int, world_size: int, workers: int, training: bool,
                            batch_size: int = 1) -> int:
    """``ReaderWds._num_samples_per_worker`` (see module docstring)."""
    g = world_size * max(1, workers)
    n = num_samples / max(g, world_size)
    if training or world_size > 1:
        n = math.ceil(n)
    if training:
        n = math.ceil(n / batch_size) * batch_size
    return int(n)


def predict_timm(lengths: list[int], world_size: int = 1, workers: int = 1, training: bool = True,
                 batch_size: int = 1, seed: int = TIMM_SEED, epoch: int = 0,
                 num_samples: int | None = None) -> Prediction:
    """timm ``ReaderWds`` on shards of ``lengths`` (``num_samples``: timm's ``--train-num-samples`` /
    ``--val-num-samples``, default their sum)."""
    _check(lengths, world_size, workers, batch_size)
    workers = max(1, workers)
    total = sum(lengths)
    n_epoch = total if num_samples is None else num_samples
    order = timm_shard_order(len(lengths), seed, epoch) if training else list(range(len(lengths)))
    avail = _assign(order, lengths, world_size, workers, by_node_first=False)
    counts = _shard_counts(len(lengths), world_size, workers, by_node_first=False)
    cut = training or world_size > 1
    n = timm_samples_per_worker(n_epoch, world_size, workers, training, batch_size)
    yielded = [[(n if s > 0 else 0) if cut else s for s in row] for row in avail]
    p = Prediction("timm", world_size, workers, total, avail, yielded)
    p.empty = [(r, k) for r in range(world_size) for k in range(workers) if counts[r][k] == 0]
    p.repeats = sum(max(0, y - s) for ra, ry in zip(avail, yielded) for s, y in zip(ra, ry))
    p.misses = sum(max(0, s - y) for ra, ry in zip(avail, yielded) for s, y in zip(ra, ry))
    p.hangs = world_size > 1 and bool(p.empty)
    return p


def predict_wds(lengths: list[int], world_size: int = 1, workers: int = 1) -> Prediction:
    """Plain webdataset with ``split_by_node`` + ``split_by_worker`` and no ``with_epoch``."""
    _check(lengths, world_size, workers, 1)
    workers = max(1, workers)
    order = list(range(len(lengths)))
    avail = _assign(order, lengths, world_size, workers, by_node_first=True)
    counts = _shard_counts(len(lengths), world_size, workers, by_node_first=True)
    p = Prediction("webdataset", world_size, workers, sum(lengths), avail, [row[:] for row in avail])
    p.empty = [(r, k) for r in range(world_size) for k in range(workers) if counts[r][k] == 0]
    p.hangs = world_size > 1 and any(sum(row) == 0 for row in counts)
    return p


def _check(lengths, world_size: int, workers: int, batch_size: int) -> None:
    if not lengths:
        raise ValueError("a split with no shards has nothing to read")
    if world_size < 1 or workers < 0 or batch_size < 1:
        raise ValueError(f"--world-size ({world_size}) and --batch-size ({batch_size}) must be >= 1, "
                         f"--workers ({workers}) >= 0")


def suggest_shards(split_samples: list[int], world_size: int, workers: int, current: int) -> int | None:
    """A ``--shards-per-split`` that gives every (rank, worker) the same number of shards in every
    split of ``split_samples`` (non-empty splits' sample counts): a multiple of
    ``G = world_size * workers`` and at most the smallest split, dividing every split (equal shards)
    when such a multiple exists up to ``4 * max(current, G)``, the one closest to ``current``; else
    the multiple of ``G`` closest to ``current``.  None when a split has fewer than ``G`` samples."""
    g = world_size * max(1, workers)
    smallest = min(split_samples)
    if smallest < g:
        return None
    cands = list(range(g, min(smallest, 4 * max(current, g)) + 1, g))
    even = [m for m in cands if all(n % m == 0 for n in split_samples)]
    return min(even or cands, key=lambda m: (abs(m - current), m))


def _least_hint(p: Prediction, split: str, training: bool, batch_size: int) -> str | None:
    """When timm's repeats are the least possible (every worker yields ``n``, ``G * n > N``, nothing
    missed): the ``train.py`` option that trades them for misses; else None."""
    g = p.world_size * p.workers
    n = max(y for row in p.yielded for y in row)
    if p.hangs or p.misses or not p.repeats or p.repeats != g * n - p.num_samples:
        return None
    unit = g * batch_size if training else g
    keep = p.num_samples // unit * unit
    why = f"{g} workers x {n} samples > {p.num_samples}" + (f", whole batches of -b {batch_size}" if training else "")
    return (f"    {split}: timm's {p.repeats} repeats are the least possible ({why}); no shard count removes them; "
            f"for none, pass --{'train' if training else 'val'}-num-samples {keep} to train.py "
            f"(then {p.num_samples - keep} missed per epoch)")


def readers_report(manifest: dict, world_size: int, workers: int, batch_size: int = 1, seed: int = TIMM_SEED,
                   epoch: int = 0) -> list[str]:
    """The lines of ``imagenet52p info OUT --readers``: per split a verdict for timm (``train`` read
    as training, with ``batch_size``, ``seed``, ``epoch``) and for webdataset, then a
    ``--shards-per-split`` to rebuild with when any is not exact."""
    workers = max(1, workers)
    lines = [f"readers at world size {world_size} x {workers} DataLoader workers (timm: train split as "
             f"training, -b {batch_size}, --seed {seed}, epoch {epoch}):"]
    sizes, current, bad = [], 0, False
    for name, split in manifest["splits"].items():
        lengths = [sh["num_samples"] for sh in split["shards"]]
        if not lengths:
            lines.append(f"  {name}: no shards")
            continue
        sizes.append(sum(lengths))
        current = max(current, len(lengths))
        timm = predict_timm(lengths, world_size, workers, training=name == "train", batch_size=batch_size,
                            seed=seed, epoch=epoch)
        wds = predict_wds(lengths, world_size, workers)
        lines.append(f"  {name} ({sum(lengths)} samples, {len(lengths)} shards): timm: {timm.verdict()}; "
                     f"webdataset: {wds.verdict()}")
        hint = _least_hint(timm, name, name == "train", batch_size)
        if hint:
            lines.append(hint)
            bad = bad or not wds.exact
        else:
            bad = bad or not (timm.exact and wds.exact)
    if bad:
        m = suggest_shards(sizes, world_size, workers, current)
        if m is None:
            lines.append(f"  no shard count helps: a split has fewer samples than {world_size}x{workers} "
                         f"(rank, worker) pairs; use fewer ranks or workers")
        else:
            lines.append(f"  rebuild with: build-imagenet52p ... --shards-per-split {m}  (a multiple of "
                         f"{world_size}x{workers}; check it again with --readers)")
    return lines
