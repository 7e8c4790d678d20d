"""Train/val/test data for the loop from a directory, and the class-subset settings.

``open_data(path, ...)`` accepts

* a **build** (``build-imagenet52p --out DIR``: ``manifest.json`` present): three
  :class:`imagenet52p.ImageNet52P` splits read through DataLoaders with
  :mod:`imagenet52p.transforms` (uint8 batches; :class:`~imagenet52p.transforms.Normalize`
  runs on the device).  The train split carries sample keys so ``data_fraction``
  selects a fixed subset by key.  Scoring reads the train split with the *eval*
  transform (no augmentation), whole on every rank;
* or a **folders tree** ``DIR/train/<wnid>/*``, ``DIR/val/<wnid>/*`` and optionally
  ``DIR/test/<wnid>/*`` (torchvision ``ImageFolder``; map-style, so shuffling,
  ``data_fraction`` and DDP splitting are done by the loop).

Class-subset settings (``head``; the subset is ``classes`` if given, else the
data's own class set; see :mod:`pruning.loop.evaluate` for the definitions):

``full``        labels in the model's output space (``label_space``); the
                model keeps its classifier.  With ``label_space="imagenet1k"``
                on a subset build this is "1000-way on the subset's images".
``restrict``    a 1000-way model's classifier is cut to the subset's rows
                (``restrict_classifier``); labels are remapped to the subset's
                positions 0..k-1.
``subset-logits`` labels stay 1000-way and training uses all 1000 logits;
                evaluation takes the arg-max over the subset's logits only
                (``logit_subset``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)

HEAD_MODES = ("full", "restrict", "subset-logits")
LABEL_SPACES = ("subset", "imagenet1k")


class LabelMap:
    """Picklable ``target_transform``: ``mapping[label]``, or ``-1`` for labels not in it."""

    def __init__(self, mapping: dict[int, int]):
        self.mapping = dict(mapping)

    def __call__(self, y: int) -> int:
        return self.mapping.get(int(y), -1)


@dataclass
class RunData:
    """What ``open_data`` resolved: datasets/loaders, label bookkeeping, how to adapt the model."""

    train: object
    val: object
    test: object | None
    num_labels: int  # size of the label space the data uses
    classes: tuple[int, ...] | None  # labels to keep (None = all)
    restrict_rows: list[int] | None  # head=restrict: classifier rows to keep
    logit_subset: list[int] | None  # head=subset-logits
    batch_transform: object | None
    describe: dict = field(default_factory=dict)
    score: object | None = None  # scoring data: the train split with the eval transform


def _class_sets(kind_set, classes_spec):
    from imagenet52p.classes import load_class_set
    sub = None if classes_spec is None else load_class_set(classes_spec)
    return kind_set, sub


def _labels_for(cs_data, sub, label_space: str) -> list[int] | None:
    """Labels (in ``label_space``) of the subset's classes, as they appear in the data."""
    if sub is None:
        return None
    if label_space == "imagenet1k":
        return list(sub.imagenet1k_indices)
    pos = {w: i for i, w in enumerate(cs_data.wnids)}
    missing = [w for w in sub.wnids if w not in pos]
    if missing:
        raise ValueError(f"classes {sub.name!r}: {len(missing)} wnids are not in the data ({missing[:5]}); "
                         "use a build that contains them, or label_space='imagenet1k'")
    return [pos[w] for w in sub.wnids]


def open_data(path, *, head: str = "full", label_space: str = "subset", classes: str | None = None,
              image_size: int = 224, resize: int | None = None, batch_size: int = 64, num_workers: int = 4,
              seed: int = 0, score_batch_size: int | None = None) -> RunData:
    """Resolve a build or folders tree into train/val/test data (module docstring).

    ``batch_size`` is the per-process micro-batch of the DataLoaders of a build
    (``LoopConfig.micro_batch``); ``score_batch_size`` the scoring loader's batch (the global
    ``batch_size``, read whole on rank 0; default ``batch_size``).
    ``classes``: a class set (``imagenet52p``, ``random52``, a wnid list file)
    restricting every split to those classes.
    """
    if head not in HEAD_MODES:
        raise ValueError(f"head={head!r}; choose one of {', '.join(HEAD_MODES)}")
    if label_space not in LABEL_SPACES:
        raise ValueError(f"label_space={label_space!r}; choose one of {', '.join(LABEL_SPACES)}")
    if head in ("restrict", "subset-logits"):
        label_space = "imagenet1k"  # both start from the 1000-way labels
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"--data {root} does not exist: give a build directory (build-imagenet52p --out) "
                                "or a folders tree with train/ and val/")
    from imagenet52p import transforms as T
    resize = resize or round(image_size * 256 / 224)
    if (root / "manifest.json").is_file():
        from imagenet52p.dataset import ImageNet52P
        probe = ImageNet52P(root, "train")
        cs_data = probe.class_set
        fmt = "build"
    elif (root / "train").is_dir() and (root / "val").is_dir():
        from imagenet52p.classes import imagenet1k_index, set_from_wnids
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        known = imagenet1k_index()
        unknown = [w for w in wnids if w not in known]
        if unknown and label_space == "imagenet1k":
            raise ValueError(f"{root}/train has folders that are not ImageNet-1k wnids ({unknown[:5]}); "
                             "use label_space='subset'")
        cs_data = set_from_wnids(root.name, wnids) if not unknown else None
        fmt = "folders"
    else:
        raise FileNotFoundError(f"{root} is neither a build (no manifest.json) nor a folders tree (train/ and val/ "
                                "subdirectories); build one with build-imagenet52p")
    _, sub = _class_sets(cs_data, classes)
    subset_set = sub if sub is not None else cs_data
    if cs_data is None and (sub is not None or head != "full"):
        raise ValueError(f"{root}/train has folders that are not ImageNet-1k wnids, so a class set (--classes) "
                         "or a subset head (restrict, subset-logits) cannot be mapped onto them; run with "
                         "head 'full' and no classes")
    keep = _labels_for(cs_data, sub, label_space) if cs_data is not None else None
    target_transform, restrict_rows, logit_subset = None, None, None
    if head == "restrict":
        restrict_rows = list(subset_set.imagenet1k_indices)
        target_transform = LabelMap({c: i for i, c in enumerate(restrict_rows)})
        keep = list(range(len(restrict_rows)))
    elif head == "subset-logits":
        logit_subset = list(subset_set.imagenet1k_indices)
        keep = list(logit_subset)
    num_labels = (len(restrict_rows) if head == "restrict" else
                  1000 if label_space == "imagenet1k" else len(cs_data) if cs_data is not None else None)
    if fmt == "build":
        from imagenet52p.dataset import ImageNet52P

        def split(name, transform, shuffle, whole=False, persistent=True, keys=False):
            share = dict(rank=0, world_size=1) if whole else {}
            bs = (score_batch_size or batch_size) if whole else batch_size
            ds = ImageNet52P(root, name, transform, target_transform, label_space=label_space, shuffle=shuffle,
                             seed=seed, batch_size=bs, with_meta=keys, **share)
            return DataLoader(ds, batch_size=bs, num_workers=num_workers, collate_fn=T.collate,
                              pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0 and persistent)

        manifest_splits = probe.manifest.get("splits", {})
        # train workers are NOT persistent: fresh workers seed their RNG from the main process's
        # (checkpointed) RNG at every pass, which keeps augmentation, and so resume, exact
        train = split("train", T.train(image_size), True, persistent=False, keys=True)
        # scoring: the train split with the eval transform (no augmentation), the whole split on
        # every rank (only rank 0 scores under DDP), reshuffled per layer step
        score = split("train", T.eval(image_size, resize), True, whole=True, persistent=False)
        val = split("val", T.eval(image_size, resize), False)
        test = split("test", T.eval(image_size, resize), False) if manifest_splits.get("test", {}).get(
            "num_samples") else None
        batch_transform = T.Normalize()
    else:
        from torchvision.datasets import ImageFolder
        tt = target_transform
        if label_space == "imagenet1k":
            from imagenet52p.classes import imagenet1k_index
            idx = imagenet1k_index()
            folder = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
            base = LabelMap({i: idx[w] for i, w in enumerate(folder)})
            tt = base if target_transform is None else _Compose(base, target_transform)

        def split(name, transform):
            if not (root / name).is_dir():
                return None
            return ImageFolder(str(root / name), transform=transform, target_transform=tt)

        train, val = split("train", T.train(image_size)), split("val", T.eval(image_size, resize))
        test = split("test", T.eval(image_size, resize))
        score = split("train", T.eval(image_size, resize))
        if tt is not None:  # ImageFolder.targets are folder indices; expose the mapped ones
            for ds in (train, val, test, score):
                if ds is not None:
                    ds.targets = [tt(t) for t in ds.targets]
        batch_transform = T.Normalize()
        if num_labels is None:
            num_labels = len(train.classes)
    describe = {"format": fmt, "path": str(root), "head": head, "label_space": label_space,
                "class_set": None if cs_data is None else {"name": cs_data.name, "sha256": cs_data.sha256},
                "classes": None if sub is None else {"name": sub.name, "sha256": sub.sha256},
                "image_size": image_size, "resize": resize}
    return RunData(train, val, test, num_labels, None if keep is None else tuple(keep), restrict_rows,
                   logit_subset, batch_transform, describe, score)


class _Compose:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __call__(self, y):
        return self.b(self.a(y))
