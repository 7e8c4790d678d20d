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
* order: the split's samples sorted by key, then a seeded permutation (seed, "order", split);
  consecutive runs of ``shard_size`` (train) or ``eval_shard_size`` (val, test) form the shards.
  With ``shards_per_split`` = N instead: N consecutive runs, the first ``n_samples % N`` of
  ``n_samples // N + 1`` samples and the rest of ``n_samples // N`` (:func:`even_sizes`); an empty
  split has no shards, and a split with fewer than N samples is refused.
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
from .config import BuildError, derived_seed
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


def even_sizes(n_samples: int, n_shards: int) -> list[int]:
    """``n_shards`` sizes summing to ``n_samples``, equal to within one (the larger ones first)."""
    q, r = divmod(n_samples, n_shards)
    return [q + 1] * r + [q] * (n_shards - r)


def shard_bounds(n_samples: int, size: int, count: int | None, split: str) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of each shard: runs of ``size``, or ``count`` runs of :func:`even_sizes`."""
    if count is None:
        return [(a, min(a + size, n_samples)) for a in range(0, n_samples, size)]
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
               count: int | None = None) -> list[tuple[str, int, tuple[Sample, ...]]]:
    """``[(shard path, shard index, samples)]`` for one split (``count``: ``shards_per_split``)."""
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
