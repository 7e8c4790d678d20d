"""The data of a run: a build (or a folders tree) opened into the engine's loaders, and the class-subset head.

One DataLoader recipe (:func:`open_split`), one label mapping (:class:`LabelMap`) and one head
vocabulary (:data:`HEADS`) serve ``imagenet52p prune`` and every grid cell (:mod:`benchmark.run`).

``open_data(path, ...)`` accepts

* a **build** (``build-imagenet52p --out DIR``: ``manifest.json`` present): the train, val and (when
  present) test splits of :class:`imagenet52p.ImageNet52P` through DataLoaders with
  :mod:`imagenet52p.transforms` (uint8 batches; :class:`~imagenet52p.transforms.Normalize` runs on the
  device).  The train split carries sample keys so ``data_fraction`` selects a fixed subset by key.
  Scoring reads the train split with the *eval* transform (no augmentation), whole, in batches of the
  global ``batch_size`` (only rank 0 scores under DDP);
* or a **folders tree** ``DIR/train/<wnid>/*``, ``DIR/val/<wnid>/*`` and optionally ``DIR/test/<wnid>/*``
  (torchvision ``ImageFolder``; map-style, so shuffling, ``data_fraction`` and DDP splitting are done by
  the engine).

Heads (:func:`choose_head`).  The *model's classes* are the rows of the starting classifier: the data's
own classes (``label_space="subset"``), ImageNet-1k's 1000 (``label_space="imagenet1k"``), or a class
set given by the caller (a grid's ``[data] full`` build).  The *run's classes* are ``classes`` if given,
else the data's own.

``full``          the model keeps its classifier; labels are the model's rows of the data's classes.
                  With ``label_space="imagenet1k"`` on a subset build this is "1000-way on the subset's
                  images".
``restrict``      the classifier is cut to the rows of the run's classes (:func:`pruning.loop.restrict_classifier`:
                  restricted logit ``j`` = the model's logit ``rows[j]``); labels are the run's positions 0..k-1.
``subset-logits`` labels stay in the model's space and training uses all its logits; evaluation takes
                  the arg-max over the run's classes' logits only (``logit_subset``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: The class-subset heads (module docstring); grid cells and ``imagenet52p prune`` share them.
HEADS = ("full", "restrict", "subset-logits")
#: The starting model's classes for ``imagenet52p prune``: the data's own, or ImageNet-1k's.
LABEL_SPACES = ("subset", "imagenet1k")


class LabelMap:
    """Picklable ``target_transform``: label ``y`` -> ``table[y]``.  ``-1`` marks a label outside the run's
    classes; such samples are dropped by the engine (``LoopConfig.classes``)."""

    def __init__(self, table):
        self.table = [int(t) for t in table]

    def __call__(self, y: int) -> int:
        return self.table[int(y)]

    def __repr__(self) -> str:
        return f"LabelMap({self.table})"


@dataclass(frozen=True)
class Head:
    """What :func:`choose_head` resolved: how the data's labels and the classifier become the run's.

    ``target``: the data's label -> the run's label (None: unchanged); ``restrict_rows``: classifier rows
    to keep (``restrict``); ``logit_subset``: logits evaluated (``subset-logits``); ``keep``: the run's
    labels (``LoopConfig.classes``; None = all); ``num_labels``: size of the run's label space;
    ``model_rows[j]``: the starting classifier's row of the data's label ``j`` (-1: not one of its classes)."""

    mode: str
    target: LabelMap | None
    restrict_rows: list[int] | None
    logit_subset: list[int] | None
    keep: tuple[int, ...] | None
    num_labels: int
    model_rows: list[int]


def choose_head(mode: str, data_wnids, model_wnids=None, subset_wnids=None, where: str = "the data") -> Head:
    """The head ``mode`` (:data:`HEADS`) for data whose label ``j`` is class ``data_wnids[j]``, a starting
    classifier whose row ``i`` is ``model_wnids[i]`` (None: the data's own classes) and the run's classes
    ``subset_wnids`` (None: all of the data's)."""
    if mode not in HEADS:
        raise ValueError(f"head={mode!r}; choose one of {', '.join(HEADS)}")
    data_wnids = list(data_wnids)
    own_space = model_wnids is None
    model_wnids = data_wnids if own_space else list(model_wnids)
    pos = {w: i for i, w in enumerate(model_wnids)}
    model_rows = [pos.get(w, -1) for w in data_wnids]
    chosen = data_wnids if subset_wnids is None else list(subset_wnids)
    missing = [w for w in chosen if w not in pos]
    if missing:
        raise ValueError(f"classes {missing[:5]} of {where} are not classes of the starting model "
                         f"({len(missing)} of {len(chosen)}); a subset must be drawn from the model's classes")
    rows = [pos[w] for w in chosen]
    if mode == "restrict":
        spos = {w: i for i, w in enumerate(chosen)}
        table = [spos.get(w, -1) for w in data_wnids]
        target = None if table == list(range(len(data_wnids))) else LabelMap(table)
        return Head(mode, target, rows, None, tuple(range(len(rows))), len(rows), model_rows)
    if mode == "full" and own_space:
        keep = None if subset_wnids is None else tuple(rows)
        return Head(mode, None, None, None, keep, len(model_wnids), model_rows)
    unknown = [w for w, r in zip(data_wnids, model_rows) if r < 0]
    if unknown:
        raise ValueError(f"classes {unknown[:5]} of {where} are not classes of the starting model; "
                         "use head \"restrict\" with the classes to keep, or data drawn from the model's classes")
    target = None if model_rows == list(range(len(data_wnids))) else LabelMap(model_rows)
    if mode == "subset-logits":
        return Head(mode, target, None, rows, tuple(rows), len(model_wnids), model_rows)
    return Head(mode, target, None, None, None if subset_wnids is None else tuple(rows), len(model_wnids),
                model_rows)


@dataclass(frozen=True)
class Transforms:
    """Sizes of the transforms: ``image_size`` crop, ``resize`` shorter side before the eval centre crop
    (default ``image_size * 256 / 224``), ``train_scale_min`` of the random-resized crop."""

    image_size: int = 224
    resize: int | None = None
    train_scale_min: float = 0.08

    def for_role(self, role: str):
        from imagenet52p import transforms as T
        if role == "train":
            return T.train(self.image_size, scale=(float(self.train_scale_min), 1.0))
        return T.eval(self.image_size, self.resize or round(self.image_size * 256 / 224))


def open_split(build, split: str, role: str, batch: int, seed: int, sizes: Transforms, workers: int,
               target_map=None):
    """The DataLoader of ``(uint8 images, labels[, meta])`` over one split of a build, for ``role``:

    ``train``: augmented (random-resized crop + flip), shuffled, batches carry sample keys so
    ``data_fraction`` selects a fixed subset by key; workers are not persistent, so each pass's workers
    seed from the checkpointed RNG and resuming stays exact.  ``score``: the train split with the eval
    transform, shuffled, read whole (every rank reads all of it; rank 0 scores).  ``val``/``test``: eval
    transform, in order, persistent workers."""
    from torch.utils.data import DataLoader

    from imagenet52p import ImageNet52P
    from imagenet52p import transforms as T

    share = dict(rank=0, world_size=1) if role == "score" else {}
    ds = ImageNet52P(build, split, transform=sizes.for_role(role), target_transform=target_map,
                     shuffle=role in ("train", "score"), seed=seed, batch_size=batch, with_meta=role == "train",
                     **share)
    return DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=T.collate,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0 and role in ("val", "test"))


@dataclass
class RunData:
    """What :func:`open_data` resolved: the loaders, the head, and a description for the run's record."""

    train: object
    val: object
    test: object | None
    score: object | None  # the train split with the eval transform, in batches of the global batch
    head: Head | None  # None: a folders tree of non-ImageNet classes (head "full", labels as they are)
    num_labels: int
    batch_transform: object | None
    describe: dict = field(default_factory=dict)


def _has_test(build: Path) -> bool:
    from imagenet52p.format import load_manifest
    return bool(load_manifest(build).get("splits", {}).get("test", {}).get("num_samples"))


def open_data(path, *, head: str = "full", label_space: str = "subset", classes: str | None = None,
              model_classes=None, sizes: Transforms = Transforms(), batch_size: int = 64, num_workers: int = 4,
              seed: int = 0, score_batch_size: int | None = None, score: bool = True) -> RunData:
    """Open a build or folders tree (module docstring) with the head ``head``.

    ``batch_size`` is the per-process micro-batch of the loaders (``LoopConfig.micro_batch``);
    ``score_batch_size`` the scoring loader's (the global ``batch_size``; default ``batch_size``).
    ``classes``: a class set (``imagenet52p``, ``random52``, a wnid list file) restricting the run to those
    classes.  ``model_classes``: the starting classifier's class set (overrides ``label_space``).  ``score``:
    also open the scoring loader (False: the caller scores other data, as a grid cell does)."""
    from imagenet52p import transforms as T
    from imagenet52p.classes import imagenet1k_set, load_class_set

    if label_space not in LABEL_SPACES:
        raise ValueError(f"label_space={label_space!r}; choose one of {', '.join(LABEL_SPACES)}")
    if head not in HEADS:
        raise ValueError(f"head={head!r}; choose one of {', '.join(HEADS)}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"--data {root} does not exist: give a build directory (build-imagenet52p --out) "
                                "or a folders tree with train/ and val/")
    cs_data, fmt = _data_classes(root)
    sub = None if classes is None else load_class_set(classes)
    if head != "full":
        label_space = "imagenet1k"  # restrict and subset-logits start from a 1000-way classifier
    if model_classes is None and label_space == "imagenet1k":
        model_classes = imagenet1k_set()
    if cs_data is None:
        if sub is not None or head != "full" or model_classes is not None:
            raise ValueError(f"{root}/train has folders that are not ImageNet-1k wnids, so a class set (--classes), "
                             "the ImageNet-1k label space or a subset head (restrict, subset-logits) cannot be "
                             "mapped onto them; run with head 'full', label_space 'subset' and no classes")
        chosen = None
    else:
        chosen = choose_head(head, cs_data.wnids, None if model_classes is None else model_classes.wnids,
                             None if sub is None else sub.wnids, where=str(root))
    target = None if chosen is None else chosen.target
    if fmt == "build":
        split = lambda name, role, bs=batch_size: open_split(root, name, role, bs, seed, sizes,  # noqa: E731
                                                             num_workers, target)
        train, val = split("train", "train"), split("val", "val")
        test = split("test", "test") if _has_test(root) else None
        score = split("train", "score", score_batch_size or batch_size) if score else None
    else:
        train, val, test, score = _folders(root, sizes, target)
    num_labels = chosen.num_labels if chosen is not None else len(train.classes)
    describe = {"format": fmt, "path": str(root), "head": head, "label_space": label_space,
                "class_set": None if cs_data is None else {"name": cs_data.name, "sha256": cs_data.sha256},
                "classes": None if sub is None else {"name": sub.name, "sha256": sub.sha256},
                "image_size": sizes.image_size, "resize": sizes.resize or round(sizes.image_size * 256 / 224)}
    return RunData(train, val, test, score, chosen, num_labels, T.Normalize(), describe)


def _data_classes(root: Path):
    """``(class set or None, "build" | "folders")`` of the data at ``root``: a build's ``classes.json``, or a
    folders tree's wnids (None when they are not all ImageNet-1k wnids)."""
    from imagenet52p.classes import imagenet1k_index, set_from_wnids

    if (root / "manifest.json").is_file():
        from imagenet52p.dataset import load_classes
        from imagenet52p.format import load_manifest
        return load_classes(root, load_manifest(root)), "build"
    if (root / "train").is_dir() and (root / "val").is_dir():
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        known = imagenet1k_index()
        return (set_from_wnids(root.name, wnids) if all(w in known for w in wnids) else None), "folders"
    raise FileNotFoundError(f"{root} is neither a build (no manifest.json) nor a folders tree (train/ and val/ "
                            "subdirectories); build one with build-imagenet52p")


def _folders(root: Path, sizes: Transforms, target):
    """``(train, val, test, score)`` ImageFolders of a folders tree, labels mapped through ``target``."""
    from torchvision.datasets import ImageFolder

    def split(name, role):
        if not (root / name).is_dir():
            return None
        ds = ImageFolder(str(root / name), transform=sizes.for_role(role), target_transform=target)
        if target is not None:  # ImageFolder.targets are folder indices; expose the mapped ones
            ds.targets = [target(t) for t in ds.targets]
        return ds

    train = split("train", "train")
    score = copy.copy(train)  # the same samples and targets (the tree is walked once), with the eval transform
    score.transform = sizes.for_role("score")
    return train, split("val", "val"), split("test", "test"), score
