"""Data streams for the engine: any torch data in, counted batches out (:class:`DataStream`).

:class:`DataStream` wraps either

* a **map-style dataset** (``len`` and ``__getitem__`` returning ``(image,
  label)``): the stream owns shuffling (a ``torch.Generator`` seeded by
  ``(seed, pass_index)``), the class restriction and ``data_fraction`` (a fixed
  seeded random subset, the same in every pass), and splits each pass across
  DDP ranks (training streams: equal shares, the ``< world`` leftover images of
  a pass are not used; evaluation streams: every image exactly once).  Resuming is exact because a pass is a pure function of its index;
* or an **iterable of ``(images, labels)`` batches** (a ``DataLoader``, a
  webdataset pipeline, a list of tensors).  Before a pass the stream calls
  ``set_epoch(pass_index)`` on the iterable, its ``.dataset`` or its
  ``.sampler`` when they have one; labels outside ``classes`` are masked out of
  each batch.  ``fraction``: when batches carry sample keys (a third element, a
  dict with ``"key"``: ImageNet52P's ``with_meta=True``), a sample is kept iff
  ``u(seed, key) < fraction`` with ``u`` uniform in [0, 1) from SHA-1 (a fixed
  subset, the same in every pass; one pass is then counted as ``round(fraction
  * N)`` images); without keys, the first ``round(fraction * N)`` images of each
  pass are kept.  Rank splitting is the iterable's job (e.g. ImageNet52P's
  ``rank``/``world_size``).

Every pass can be cut at an exact image budget (the last batch is sliced), which
is how fractional epochs are counted.  ``pass_images`` is the number of images
in one pass after restrictions, summed over ranks.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from .rng import rng_preserved

log = logging.getLogger(__name__)


def is_map_style(data) -> bool:
    return (isinstance(data, Dataset) and not isinstance(data, IterableDataset)
            and hasattr(data, "__getitem__") and hasattr(data, "__len__"))


def dataset_labels(ds, read_items: bool = True) -> list[int] | None:
    """Labels of a map-style dataset, without decoding images when possible
    (``targets``, ``labels``, ``TensorDataset``, ``Subset`` of those); otherwise reads every item, or, with
    ``read_items=False``, returns None."""
    if isinstance(ds, Subset):
        inner = dataset_labels(ds.dataset, read_items)
        return None if inner is None else [inner[i] for i in ds.indices]
    if isinstance(ds, torch.utils.data.TensorDataset):
        return [int(v) for v in ds.tensors[1].tolist()]
    for attr in ("targets", "labels"):
        t = getattr(ds, attr, None)
        if t is not None and not callable(t) and len(t) == len(ds):
            return [int(v) for v in (t.tolist() if torch.is_tensor(t) else t)]
    if not read_items:
        return None
    log.warning("%s has no .targets; reading all %d items to find labels", type(ds).__name__, len(ds))
    return [int(ds[i][1]) for i in range(len(ds))]


def _set_epoch(data, epoch: int) -> None:
    for obj in (data, getattr(data, "dataset", None), getattr(data, "sampler", None),
                getattr(getattr(data, "batch_sampler", None), "sampler", None)):
        fn = getattr(obj, "set_epoch", None)
        if callable(fn):
            fn(epoch)


def key_uniform(seed: int, key: str) -> float:
    """A uniform number in [0, 1) that is a pure function of ``(seed, key)``."""
    digest = hashlib.sha1(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0 ** 64


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class DataStream:
    """Counted passes over ``data`` (see the module docstring).

    ``batch_size``: per-rank batch for map-style data (ignored for iterables).
    ``classes``: keep only these labels (None = all).  ``fraction``: in (0, 1].
    ``shuffle``: reshuffle each pass (map-style).  ``pass_images``: images in one
    full pass of an iterable after ``classes`` (before ``fraction``), summed over
    ranks, for iterables that cannot tell (else one counting pass is made).
    ``split_ranks=False``: a map-style stream gives every rank the whole pass
    (used for scoring, which runs on rank 0 only).
    """

    def __init__(self, data, batch_size: int = 64, classes=None, fraction: float = 1.0, seed: int = 0,
                 shuffle: bool = True, num_workers: int = 0, pin_memory: bool = False,
                 pass_images: int | None = None, name: str = "data", split_ranks: bool = True):
        if data is None:
            raise ValueError(f"{name}: no data given")
        self.data, self.name = data, name
        self.batch_size, self.seed, self.shuffle = int(batch_size), int(seed), shuffle
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.fraction = float(fraction)
        self.rank, self.world = dist_info() if split_ranks else (0, 1)
        self.map_style = is_map_style(data)
        self._keyed = False
        if self.map_style:
            self.indices = self._select_indices()
            self._pass_images = len(self.indices)
        else:
            if not isinstance(data, Iterable):
                raise ValueError(f"{name}: expected a map-style Dataset or an iterable of (images, labels) "
                                 f"batches, got {type(data).__name__}")
            self._pass_images = (max(1, round(self.fraction * pass_images)) if pass_images is not None
                                 else self._iterable_len())
        if self._pass_images is not None and self._pass_images < 1:
            raise ValueError(f"{name}: no images left after classes={self.classes} and fraction={self.fraction}")

    def _select_indices(self) -> list[int]:
        n = len(self.data)
        if self.classes is None:
            idx = list(range(n))
        else:
            keep = set(self.classes)
            labels = dataset_labels(self.data)
            idx = [i for i, y in enumerate(labels) if y in keep]
            missing = sorted(keep - set(labels[i] for i in idx))
            if missing:
                log.warning("%s: classes %s have no images", self.name, missing[:10])
        if self.fraction < 1.0:
            k = max(1, round(self.fraction * len(idx)))
            g = torch.Generator().manual_seed(self.seed * 7919 + 17)
            perm = torch.randperm(len(idx), generator=g)[:k]
            idx = [idx[i] for i in sorted(perm.tolist())]
        return idx

    def _iterable_len(self) -> int | None:
        """Images per full pass of an iterable after ``fraction`` (None if unknown without a pass)."""
        if self.classes is not None:
            return None
        ds = getattr(self.data, "dataset", None)
        if ds is not None and hasattr(ds, "__len__"):
            # a rank-split dataset reports its own share; ranks hold equal shares
            full = len(ds) * (self.world if getattr(ds, "world_size", 1) > 1 else 1)
        elif isinstance(self.data, (list, tuple)):
            full = sum(len(b[1]) for b in self.data)
        else:
            return None
        return max(1, round(self.fraction * full))

    @property
    def pass_images(self) -> int:
        """Images in one pass after ``classes`` and ``fraction``, summed over ranks
        (counted by one pass over the data when the iterable cannot tell)."""
        if self._pass_images is None:
            log.warning("%s: counting images in one pass (give pass_images to skip this)", self.name)
            self._keyed = False
            with rng_preserved():  # transforms may draw random numbers: counting must not move the RNGs
                local = sum(len(y) for _, y in self.batches(0))
            full = local * self.world
            if full < 1:
                raise ValueError(f"{self.name}: no images left after classes={self.classes}")
            # keyed selection already applied the fraction while counting
            self._pass_images = full if self._keyed else max(1, round(self.fraction * full))
        return self._pass_images

    def set_pass_images(self, n: int) -> None:
        """Take ``n`` as :attr:`pass_images` (a count an earlier run of the same data made and stored), so a
        resumed run does not count it again."""
        if int(n) < 1:
            raise ValueError(f"{self.name}: pass_images={n} must be >= 1")
        self._pass_images = int(n)

    def batches(self, pass_index: int, budget: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of pass ``pass_index``; at most ``budget`` images in total over ranks."""
        local_budget = None if budget is None else math.ceil(budget / self.world)
        if self.map_style:
            it = self._map_batches(pass_index, budget)
        else:
            _set_epoch(self.data, pass_index)
            it = self._filtered(iter(self.data))
        seen = 0
        for x, y in it:
            if local_budget is not None:
                room = local_budget - seen
                if room <= 0:
                    break
                if len(y) > room:
                    x, y = x[:room], y[:room]
            seen += len(y)
            yield x, y

    def _filtered(self, it):
        frac_limit = None
        if self.fraction < 1.0 and self._pass_images is not None:
            frac_limit = math.ceil(self._pass_images / self.world)
        seen = 0
        keep = None if self.classes is None else torch.tensor(self.classes)
        for batch in it:
            x, y = batch[0], batch[1]
            y = torch.as_tensor(y)
            meta = batch[2] if len(batch) > 2 and isinstance(batch[2], dict) else None
            if self.fraction < 1.0 and meta is not None and "key" in meta:
                self._keyed = True
                m = torch.tensor([key_uniform(self.seed, k) < self.fraction for k in meta["key"]])
                x, y = x[m], y[m]
            if keep is not None:
                mask = torch.isin(y, keep)
                if not bool(mask.all()):
                    x, y = x[mask], y[mask]
            if len(y) == 0:
                continue
            if frac_limit is not None and meta is None:
                if seen >= frac_limit:
                    break
                x, y = x[:frac_limit - seen], y[:frac_limit - seen]
            seen += len(y)
            yield x, y

    def _map_batches(self, pass_index: int, budget: int | None):
        idx = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_index)
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        if budget is not None:
            idx = idx[:budget]
        if self.world > 1 and not self.shuffle:
            idx = idx[self.rank::self.world]  # evaluation: every image exactly once, shares differ by <= 1
        elif self.world > 1:
            per = len(idx) // self.world  # training: equal shares (the last < world images of the pass wait)
            if per == 0:
                raise ValueError(f"{self.name}: {len(idx)} images cannot be split over {self.world} ranks")
            idx = idx[self.rank:per * self.world:self.world]
        loader = DataLoader(Subset(self.data, idx), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            persistent_workers=False)
        for x, y in loader:
            yield x, torch.as_tensor(y)

    def __repr__(self) -> str:
        kind = "map-style" if self.map_style else "iterable"
        return (f"DataStream({self.name}, {kind}, pass_images={self._pass_images}, classes="
                f"{None if self.classes is None else len(self.classes)}, fraction={self.fraction})")
