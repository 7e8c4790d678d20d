"""Read a build (``docs/FORMAT.md``) as a torch ``IterableDataset`` with exact epochs.

:class:`ImageNetShards` reads any class set's build; :class:`ImageNet52P` is the same class under
the name users import. Items are ``(image, target)`` (``(image, target, meta)`` with
``with_meta=True``); with ``transform=None`` the image is an RGB ``PIL.Image`` like torchvision's
datasets.

Definitions (all positions are sample positions in one epoch's order):

* **epoch order**: shards in manifest order (``shuffle=False``) or permuted by
  ``random.Random(f"{seed}/{epoch}")`` (``shuffle=True``); samples in tar order within a shard.
  ``N`` = samples in the split.
* **rank share** (``rank`` of ``world_size``): ``even=None`` (exact, the default) gives rank ``r``
  the contiguous positions ``[r*N//W, (r+1)*N//W)``; ranks differ by at most one sample.
  ``even="pad"`` gives every rank ``ceil(N/W)`` positions of the order repeated cyclically: the
  at most ``W-1`` positions past ``N`` are repeats of the first samples, flagged
  ``meta["padded"] = True``. ``even="drop"`` gives every rank ``N//W`` positions; the last
  ``N mod W`` samples of the (shuffled) order are not read that epoch.
* **worker share**: a rank's share is cut into ``num_workers`` contiguous pieces, at multiples of
  ``batch_size`` when it is given (then each worker yields full batches except the rank's last,
  and ``len(DataLoader)`` is exact).
* **buffer shuffle** (``shuffle=True``): each (rank, worker) passes its samples through a buffer of
  ``shuffle_buffer`` encoded samples, seeded by ``(seed, epoch, rank, worker)``.

So with ``even=None`` the union over ranks and workers of one epoch is every sample exactly once,
for any number of shards, workers and ranks (a worker whose share is empty yields nothing).
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import math
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .classes import ClassSet
from .format import file_sha256, load_manifest, read_tar_samples, resolve_shard

log = logging.getLogger(__name__)

LABEL_SPACES = ("subset", "imagenet1k")
EVEN = (None, "pad", "drop")
ON_ERROR = ("raise", "skip")
_SKIP_SLOTS = 1024


class SampleError(RuntimeError):
    """A sample could not be read, decoded or transformed; the message names the shard and key."""


@dataclass(frozen=True)
class Segment:
    """Samples ``[start, stop)`` of shard number ``shard`` (manifest order); ``padded`` marks repeats."""

    shard: int
    start: int
    stop: int
    padded: bool = False


def epoch_order(num_shards: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """Shard indices in the order one epoch reads them."""
    order = list(range(num_shards))
    if shuffle:
        random.Random(f"{seed}/{epoch}").shuffle(order)
    return order


def rank_range(n: int, world_size: int, rank: int, even: str | None) -> tuple[int, int]:
    """Positions ``[start, stop)`` of rank ``rank``; positions >= n wrap around (see module doc)."""
    if even is None:
        return rank * n // world_size, (rank + 1) * n // world_size
    per = math.ceil(n / world_size) if even == "pad" else n // world_size
    return rank * per, (rank + 1) * per


def worker_range(count: int, num_workers: int, worker: int, batch_size: int | None) -> tuple[int, int]:
    """Offsets ``[start, stop)`` within a rank share of ``count`` samples for one worker."""
    if not batch_size:
        return worker * count // num_workers, (worker + 1) * count // num_workers
    batches = math.ceil(count / batch_size)
    b0, b1 = worker * batches // num_workers, (worker + 1) * batches // num_workers
    return min(b0 * batch_size, count), min(b1 * batch_size, count)


def segments(order: list[int], lengths: list[int], start: int, stop: int) -> list[Segment]:
    """The shard pieces that epoch positions ``[start, stop)`` cover (wrapping past the end, flagged)."""
    n = sum(lengths)
    ends, total = [], 0
    for s in order:
        total += lengths[s]
        ends.append(total)
    out, pos = [], start
    while pos < stop and n:
        q = pos % n
        k = bisect.bisect_right(ends, q)
        first = ends[k] - lengths[order[k]]
        take = min(stop - pos, ends[k] - q)
        out.append(Segment(order[k], q - first, q - first + take, pos >= n))
        pos += take
    return out


def decode_rgb(data: bytes):
    """JPEG bytes -> loaded RGB ``PIL.Image`` (what ``transform=None`` yields)."""
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(repr(a) for a in allowed)}")


def load_classes(root: str | Path, manifest: dict) -> ClassSet:
    """``root/classes.json``, checked against the class-set hash recorded in the manifest."""
    path = Path(root) / "classes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; every build has one: copy the whole build directory or rebuild")
    class_set = ClassSet.from_json(path.read_text(encoding="utf-8"))
    want = manifest.get("class_set", {}).get("sha256")
    if want and class_set.sha256 != want:
        raise ValueError(f"{path} hashes to {class_set.sha256[:12]}..., but manifest.json records {want[:12]}...: "
                         "the two files come from different builds; copy both from one build or rebuild")
    return class_set


def _buffer_shuffle(stream, size: int, rng: random.Random):
    """Shuffle a stream through a buffer of ``size`` items (webdataset-style, deterministic given rng)."""
    buf = []
    for item in stream:
        if len(buf) < size:
            buf.append(item)
            continue
        k = rng.randrange(size)
        buf[k], item = item, buf[k]
        yield item
    rng.shuffle(buf)
    yield from buf


class ImageNetShards(IterableDataset):
    """The shards of one split of a build; see the module docstring for the exact epoch definition.

    Args:
        root: build directory (holds ``manifest.json``).  split: ``train`` | ``val`` | ``test``.
        transform: applied to the image; transforms with ``accepts_jpeg = True`` (those of
            :mod:`imagenet52p.transforms`) get the JPEG bytes, others a loaded RGB PIL image.
        target_transform: applied to the integer label.
        label_space: ``subset`` (0..num_classes-1) or ``imagenet1k`` (torchvision's 0..999 index).
        shuffle: shard permutation + sample buffer per epoch (default: True for ``train`` only).
        seed, shuffle_buffer: shuffling seed and buffer size (encoded samples per worker).
        rank, world_size: this process's share (default: torch.distributed's, else 0 of 1).
        even: None (exact shares), ``pad`` or ``drop`` (equal shares for DDP training).
        batch_size: the DataLoader's batch size, to cut worker shares at batch boundaries.
        verify: check every shard's sha256 against the manifest before reading.
        on_error: ``raise`` (default) or ``skip`` (train only: undecodable samples are logged,
            counted in :attr:`num_skipped` and left out).
        with_meta: items become ``(image, target, {"key", "shard", "wnid", "source", "padded"})``.
    """

    def __init__(self, root, split: str = "train", transform=None, target_transform=None, *,
                 label_space: str = "subset", shuffle: bool | None = None, seed: int = 0,
                 shuffle_buffer: int = 1000, rank: int | None = None, world_size: int | None = None,
                 even: str | None = None, batch_size: int | None = None, verify: bool = False,
                 on_error: str = "raise", with_meta: bool = False):
        # over 60 lines: the argument and manifest checks, in order, each with its own message
        super().__init__()
        _choice("label_space", label_space, LABEL_SPACES)
        _choice("even", even, EVEN)
        _choice("on_error", on_error, ON_ERROR)
        if on_error == "skip" and split != "train":
            raise ValueError(f"on_error='skip' is only for the train split (got split={split!r}): "
                             "evaluation must see every sample; fix or rebuild the damaged shard instead")
        for name, value in (("shuffle_buffer", shuffle_buffer), ("batch_size", batch_size)):
            if (value is not None or name != "batch_size") and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ValueError(f"split {split!r} is not in {self.root / 'manifest.json'}; available: "
                             f"{', '.join(sorted(splits)) or 'none'}")
        self.split, self.transform, self.target_transform = split, transform, target_transform
        self.class_set = load_classes(self.root, self.manifest)
        info = splits[split]
        for i, s in enumerate(info["shards"]):  # ManifestError for a path that leaves the build
            resolve_shard(self.root, s["path"], f"splits.{split}.shards[{i}]")
        self.shard_paths = [self.root / s["path"] for s in info["shards"]]
        self.shard_lengths = [int(s["num_samples"]) for s in info["shards"]]
        self._shard_names = [s["path"] for s in info["shards"]]
        self.num_samples = int(info["num_samples"])
        self.per_class = dict(info.get("per_class", {}))
        if sum(self.shard_lengths) != self.num_samples:
            raise ValueError(f"{self.root / 'manifest.json'}: split {split} lists {self.num_samples} samples but its "
                             f"shards hold {sum(self.shard_lengths)}; the manifest is damaged: rebuild")
        if self.num_samples == 0:
            raise ValueError(f"split {split!r} of {self.root} is empty (0 samples); choose another split "
                             "or rebuild with samples in it (e.g. --val-per-class > 0)")
        self._check_shards(info["shards"], verify)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed's are used)")
        if rank is None:
            import torch.distributed as dist
            ready = dist.is_available() and dist.is_initialized()
            rank, world_size = (dist.get_rank(), dist.get_world_size()) if ready else (0, 1)
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"need integers 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
        if even == "drop" and self.num_samples < world_size:
            raise ValueError(f"even='drop' with {self.num_samples} samples and world_size={world_size} leaves "
                             "nothing per rank; use even='pad' or fewer ranks")
        self.rank, self.world_size, self.even, self.batch_size = rank, world_size, even, batch_size
        self.label_space, self.seed, self.shuffle_buffer = label_space, seed, shuffle_buffer
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.on_error, self.with_meta = on_error, with_meta
        # Shared-memory tensors (they pickle to DataLoader workers in any start method): the epoch, set
        # by the main process and read by (persistent) workers; skip counts, one slot per process.
        self._epoch_t = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._skipped_t = torch.zeros(1 + _SKIP_SLOTS, dtype=torch.int64).share_memory_()
        cs = self.class_set.classes
        names = [c.name for c in cs]
        self.wnids = [c.wnid for c in cs]
        self.classes = [f"{n} ({c.wnid})" if names.count(n) > 1 else n for n, c in zip(names, cs)]
        self.imagenet1k_indices = [c.imagenet1k_index for c in cs]
        self.voc_classes = [c.voc_class for c in cs]
        self._labels = list(range(len(cs))) if label_space == "subset" else self.imagenet1k_indices
        self.wnid_to_idx = dict(zip(self.wnids, self._labels))
        self.class_to_idx = dict(zip(self.classes, self._labels))

    def _check_shards(self, entries: list[dict], verify: bool) -> None:
        items = list(zip(self.shard_paths, entries))
        if verify:
            from tqdm import tqdm
            items = tqdm(items, desc=f"verify {self.split} shards", unit="shard", leave=False)
        for path, entry in items:
            if not path.is_file():
                raise FileNotFoundError(f"shard {path} (listed in manifest.json) is missing; copy the whole build "
                                        f"directory again or rebuild")
            size = path.stat().st_size
            if "bytes" in entry and size != entry["bytes"]:
                raise ValueError(f"shard {path} has {size} bytes, manifest.json says {entry['bytes']}: the copy is "
                                 "incomplete or damaged; copy it again or rebuild")
            if verify and file_sha256(path) != entry["sha256"]:
                raise ValueError(f"shard {path} does not match its sha256 in manifest.json: the file is damaged; "
                                 "copy it again or rebuild")

    @property
    def num_classes(self) -> int:
        return len(self.class_set)

    @property
    def epoch(self) -> int:
        return int(self._epoch_t[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle (call before iterating; seen by persistent workers too)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self._epoch_t[0] = epoch

    @property
    def num_skipped(self) -> int:
        """Samples left out by ``on_error='skip'`` so far (all epochs, all workers)."""
        return int(self._skipped_t.sum())

    def __len__(self) -> int:
        """Samples this rank yields per epoch (the whole split when world_size == 1)."""
        start, stop = rank_range(self.num_samples, self.world_size, self.rank, self.even)
        return stop - start

    def plan(self, worker: int = 0, num_workers: int = 1, epoch: int | None = None) -> list[Segment]:
        """The shard pieces one worker of this rank reads in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        order = epoch_order(len(self.shard_paths), self.shuffle, self.seed, epoch)
        r0, r1 = rank_range(self.num_samples, self.world_size, self.rank, self.even)
        w0, w1 = worker_range(r1 - r0, num_workers, worker, self.batch_size)
        return segments(order, self.shard_lengths, r0 + w0, r0 + w1)

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        stream = self._raw(self.plan(worker, num_workers, epoch))
        if self.shuffle:
            stream = _buffer_shuffle(stream, self.shuffle_buffer,
                                     random.Random(f"{self.seed}/{epoch}/{self.rank}/{worker}"))
        for raw in stream:
            item = self._item(*raw)
            if item is not None:
                yield item

    def _raw(self, plan: list[Segment]):
        for seg in plan:
            path, length = self.shard_paths[seg.shard], self.shard_lengths[seg.shard]
            count = 0
            try:
                for key, parts in read_tar_samples(path, seg.start, None if seg.stop == length else seg.stop):
                    count += 1
                    if count > seg.stop - seg.start:
                        break
                    yield seg.shard, key, parts, seg.padded
            except (tarfile.TarError, OSError, ValueError) as exc:
                raise SampleError(f"cannot read shard {path} ({type(exc).__name__}: {exc}); it is damaged: "
                                  "copy it again or rebuild (verify=True checks sha256)") from exc
            if count != seg.stop - seg.start:
                raise SampleError(f"shard {path} does not hold the {length} samples manifest.json lists "
                                  f"(read {seg.start + count} while expecting samples up to {seg.stop}): it is "
                                  "damaged or from another build; copy it again or rebuild")

    def _item(self, shard: int, key: str, parts: dict, padded: bool):
        rel = self._shard_names[shard]
        try:
            if "jpg" not in parts or "cls" not in parts:
                raise ValueError(f"members {sorted(parts)}, expected jpg, cls and json")
            label = int(parts["cls"])
            if not 0 <= label < len(self._labels):
                raise ValueError(f"label {label} outside 0..{len(self._labels) - 1}")
            target = self._labels[label]
            jpg, tf = parts["jpg"], self.transform
            if tf is None:
                img = decode_rgb(jpg)
            else:
                img = tf(jpg) if getattr(tf, "accepts_jpeg", False) else tf(decode_rgb(jpg))
            meta = None
            if self.with_meta:
                info = json.loads(parts["json"]) if "json" in parts else {}
                meta = {"key": key, "shard": rel, "wnid": info.get("wnid", ""),
                        "source": info.get("source", ""), "padded": padded}
        except Exception as exc:  # noqa: BLE001 - re-raised with the sample's address
            err = SampleError(f"cannot decode sample {key!r} in shard {rel} of {self.root}: "
                              f"{type(exc).__name__}: {exc}")
            if self.on_error == "raise":
                raise err from exc
            info = get_worker_info()
            self._skipped_t[0 if info is None else 1 + info.id % _SKIP_SLOTS] += 1  # one writer per slot
            log.warning("skipped (on_error='skip'): %s", err)
            return None
        if self.target_transform is not None:
            target = self.target_transform(target)
        return (img, target) if meta is None else (img, target, meta)

    def __repr__(self) -> str:
        lines = [f"Number of datapoints: {self.num_samples}" + (
                     f" (rank {self.rank}/{self.world_size}: {len(self)}, even={self.even!r})"
                     if self.world_size > 1 else ""),
                 f"Root location: {self.root}", f"Split: {self.split}",
                 f"Classes: {self.class_set.name} ({self.num_classes}), label_space={self.label_space!r}",
                 f"Shards: {len(self.shard_paths)}, shuffle={self.shuffle} (seed={self.seed}, epoch={self.epoch})"]
        if self.transform is not None:
            lines.append(f"Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"Target transform: {self.target_transform!r}")
        return "\n    ".join([type(self).__name__] + lines)


class ImageNet52P(ImageNetShards):
    """``ImageNet52P(root, split="train", transform=None, ...)``: the entry point; reads any build
    (ImageNet-52P, random52, imagenet1k or a custom class list). See :class:`ImageNetShards`."""
