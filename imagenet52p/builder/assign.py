"""The assignment of samples to splits, keys and shards (the build's deterministic plan), decided
before any parallel work.

Definitions (all driven by ``seed`` through :func:`~.config.derived_seed`, never by ``hash``):

* ``val``: for each class, its train images sorted by source path, then the first
  ``val_per_class`` of a seeded permutation (seed, "val", wnid).  ``train`` is the rest.
  ``test`` is ImageNet's validation set for the chosen classes.
* key: ``{split}_{wnid}_{stem}`` where stem is the file name without its last extension and
  every character outside ``[A-Za-z0-9_-]`` (dots included: webdataset splits keys at the first
  dot) becomes ``_``.  Should two files of a class map to the same key, the one whose source
  path sorts first keeps it and the others get ``_2``, ``_3``, ...
* order: the split's samples sorted by key, then a seeded permutation (seed, "order", split).
* shards: by default (neither a shard size nor ``shards_per_split`` given) N = :func:`auto_shard_count`
  consecutive runs, the first ``n_samples % N`` of ``n_samples // N + 1`` samples and the rest of
  ``n_samples // N`` (:func:`even_sizes`).  With ``shards_per_split`` = N: the same cut with that N; a
  split with fewer than N samples is refused.  With ``shard_size`` / ``eval_shard_size`` given:
  consecutive runs of ``shard_size`` (train) or ``eval_shard_size`` (val, test), the last one shorter.
  An empty split has no shards.
* plan hash of a shard: sha256 over the build identity and each planned sample's key, label,
  source path and source size.  A shard on disk is reused only if its recorded plan hash and
  checksum match.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import PurePosixPath

import numpy as np

from ..classes import ClassSet
from .config import AUTO, BuildError, derived_seed
from .sources import Source
from .writer import Sample

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def shard_prefix(cs: ClassSet) -> str:
    """``imagenet52p-v1`` -> ``imagenet52p``; other names made file-name safe."""
    return _UNSAFE.sub("_", re.sub(r"-v\d+$", "", cs.name)) or "classes"


def shard_rel(prefix: str, split: str, index: int) -> str:
    return f"{split}/{prefix}-{split}-{index:06d}.tar"


def base_key(split: str, wnid: str, rel: str) -> str:
    stem = PurePosixPath(rel).name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return f"{split}_{wnid}_{_UNSAFE.sub('_', stem)}"


def assign_keys(split: str, sources: list[Source]) -> list[tuple[str, Source]]:
    """Unique keys for ``sources`` of one split (see module docstring)."""
    taken: set[str] = set()
    out = []
    for src in sorted(sources, key=lambda s: (s.wnid, s.rel)):
        base = key = base_key(split, src.wnid, src.rel)
        n = 1
        while key in taken:
            n += 1
            key = f"{base}_{n}"
        taken.add(key)
        out.append((key, src))
    return out


def split_sources(sources: list[Source], wnids: list[str], val_per_class: int, seed: int
                  ) -> dict[str, list[Source]]:
    """``{"train", "val", "test"}`` -> sources (see module docstring for the definitions)."""
    by_class: dict[str, list[Source]] = defaultdict(list)
    test = []
    for s in sources:
        (by_class[s.wnid] if s.split == "train" else test).append(s)
    short = [f"{w} ({len(by_class[w])} images)" for w in wnids
             if by_class.get(w) and len(by_class[w]) <= val_per_class]
    if short:
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise BuildError(f"--val-per-class {val_per_class} would leave no train images for {len(short)} classes: "
                         f"{', '.join(short[:10])}{more}; lower --val-per-class")
    train, val = [], []
    for w in wnids:
        items = sorted(by_class.get(w, []), key=lambda s: s.rel)
        if not items:
            continue
        rng = np.random.default_rng(derived_seed(seed, "val", w))
        held = set(rng.permutation(len(items))[:val_per_class].tolist())
        for i, s in enumerate(items):
            (val if i in held else train).append(s)
    return {"train": train, "val": val, "test": test}


#: The automatic shard counts (:func:`auto_shard_count`): multiples of ``AUTO_SHARD_MULTIPLE``, else the
#: ``AUTO_SHARD_LADDER``, never below ``MIN_SHARD_SIZE`` samples per shard.
AUTO_SHARD_MULTIPLE = 240
AUTO_SHARD_LADDER = (240, 120, 60, 48, 24, 12, 6, 4, 2, 1)
MIN_SHARD_SIZE = 8


def auto_shard_count(n_samples: int, target: int) -> int:
    """The default number of shards of a split of ``n_samples``, with shards of at most ``target``
    samples (1000 for train, 250 for val and test):

    1. 0 for an empty split; 1 for a split of fewer than ``MIN_SHARD_SIZE`` (8) samples.
    2. Else the smallest multiple of 240 whose shards hold at most ``target`` samples:
       ``240 * ceil(n_samples / (240 * target))``, if its shards keep at least 8 samples
       (``n_samples // count >= 8``, true for every split of 1,920 samples or more when ``target``
       is 16 or more).
    3. Else (fewer than 1,920 samples) the largest count of ``AUTO_SHARD_LADDER`` that keeps at least
       8 samples per shard: ``n_samples // count >= 8``.

    Sizes are then equal to within one sample (:func:`even_sizes`).  Examples: 1,281,167 (ImageNet-1k
    train) -> 1440 shards of 889-890; 64,400 -> 240 of 268-269; 2,600 (ImageNet-52P val) -> 240 of
    10-11; 200 -> 24 of 8-9; 40 -> 4 of 10; 5 -> 1.

    Why: timm's ``wds/`` reader and webdataset hand whole shards to the G = ranks x workers global
    workers, so the shards divide evenly among them exactly when G divides the count.  240 =
    2^4 * 3 * 5 is the smallest number with 20 divisors; the ladder is the highly composite numbers
    (each has more divisors than every smaller number) that divide 240, so each rung keeps as many
    products G as that many shards can, and a smaller rung never adds a G that 240 lacks.  Each count
    gives every (rank, worker) count / G shards for these G:

    ======  ===================================================================
    count   G = ranks x workers
    ======  ===================================================================
    240     1 2 3 4 5 6 8 10 12 15 16 20 24 30 40 48 60 80 120 240
    120     1 2 3 4 5 6 8 10 12 15 20 24 30 40 60 120
    60      1 2 3 4 5 6 10 12 15 20 30 60
    48      1 2 3 4 6 8 12 16 24 48
    24      1 2 3 4 6 8 12 24
    12      1 2 3 4 6 12
    6       1 2 3 6
    4       1 2 4
    2       1 2
    1       1
    ======  ===================================================================

    A multiple 240 * m also covers the divisors of 240 * m (1440 = 240 * 6 adds 9, 18, 36, 72, ...).
    With G dividing both the count and ``n_samples``, every (rank, worker) gets ``n_samples / G``
    samples (the larger shards come first, ``n_samples % count`` of them, also a multiple of G): timm
    and webdataset read each sample once.  When G does not divide ``n_samples`` no shard count makes
    timm exact (``imagenet52p info OUT --readers`` says so).  The minimum of 8 samples keeps a shard
    from being mostly per-file cost (an open and 1.5 KB of tar headers per sample for each ~100 KB
    image); it is the largest power of two that still lets ImageNet-52P's 2,600-image val and test
    splits use the full 240 (10.8 samples per shard).
    """
    if n_samples <= 0:
        return 0
    if n_samples < MIN_SHARD_SIZE:
        return 1
    count = AUTO_SHARD_MULTIPLE * -(-n_samples // (AUTO_SHARD_MULTIPLE * target))
    if n_samples // count >= MIN_SHARD_SIZE:
        return count
    return next(c for c in AUTO_SHARD_LADDER if n_samples // c >= MIN_SHARD_SIZE)


def even_sizes(n_samples: int, n_shards: int) -> list[int]:
    """``n_shards`` sizes summing to ``n_samples``, equal to within one (the larger ones first)."""
    q, r = divmod(n_samples, n_shards)
    return [q + 1] * r + [q] * (n_shards - r)


def shard_bounds(n_samples: int, size: int, count: int | str | None, split: str) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of each shard: runs of ``size`` (``count`` None), or ``count`` runs of
    :func:`even_sizes` (``count`` ``"auto"``: :func:`auto_shard_count` of ``n_samples`` and ``size``)."""
    if count is None:
        return [(a, min(a + size, n_samples)) for a in range(0, n_samples, size)]
    if count == AUTO:
        count = auto_shard_count(n_samples, size)
    if n_samples == 0:
        return []
    if count > n_samples:
        raise BuildError(f"--shards-per-split {count} exceeds the {n_samples} samples of split {split!r} "
                         f"(every shard needs at least one sample); choose at most {n_samples}")
    bounds, a = [], 0
    for n in even_sizes(n_samples, count):
        bounds.append((a, a + n))
        a += n
    return bounds


def plan_split(split: str, sources: list[Source], cs: ClassSet, size: int, seed: int, prefix: str,
               count: int | str | None = None) -> list[tuple[str, int, tuple[Sample, ...]]]:
    """``[(shard path, shard index, samples)]`` for one split (``size``: its shard size or bound;
    ``count``: :meth:`~.config.BuildConfig.shard_count`, N, ``"auto"`` or None)."""
    keyed = sorted(assign_keys(split, sources), key=lambda t: t[0])
    order = np.random.default_rng(derived_seed(seed, "order", split)).permutation(len(keyed)).tolist()
    infos = {c.wnid: c for c in cs}
    samples = []
    for i in order:
        key, src = keyed[i]
        c = infos[src.wnid]
        samples.append(Sample(key, c.index, src, c.imagenet1k_index, c.voc_class))
    return [(shard_rel(prefix, split, j), j, tuple(samples[a:b]))
            for j, (a, b) in enumerate(shard_bounds(len(samples), size, count, split))]


def plan_sha256(identity_digest: str, rel: str, samples: tuple[Sample, ...]) -> str:
    payload = [identity_digest, rel, [[s.key, s.label, s.source.rel, s.source.size] for s in samples]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()
