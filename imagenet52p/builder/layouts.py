"""Input layouts: detect which one a root is, and list its images with their wnids.

Four layouts (``--layout`` forces one; ``auto`` tries them in this order):

``archives``  ``ROOT/ILSVRC2012_img_train.tar`` (a tar of per-class tars), optionally
              ``ILSVRC2012_img_val.tar`` + ``ILSVRC2012_devkit_t12.tar.gz``; read in place (see
              :mod:`.archives`), never extracted.
``kaggle``    ``ROOT/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG``, flat ``.../CLS-LOC/val/*.JPEG`` labelled
              by ``ROOT/LOC_val_solution.csv`` (first wnid of ``PredictionString``).
``devkit``    ``ROOT/train/<wnid>/*.JPEG``, flat ``ROOT/val/ILSVRC2012_val_<8d>.JPEG`` labelled by the
              devkit (``ILSVRC2012_devkit_t12/`` or its ``.tar.gz`` in ROOT): line *i* of
              ``ILSVRC2012_validation_ground_truth.txt`` is the ILSVRC2012_ID of image *i*, mapped to a wnid
              by ``meta.mat``.
``folders``   ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG`` (torchvision's layout).

A scan yields :class:`Source` records for the chosen classes only.  Source split ``train`` feeds the
``train`` and ``val`` output splits, source split ``val`` (ImageNet's validation set) feeds ``test``.
Files without an image extension, dot-files and folders not named like an ImageNet-1k wnid are
*ignored* and counted; images whose label cannot be found, and image entries that cannot be read
(a dangling symlink), are *skipped* with a reason.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from ..classes import imagenet1k_index
from .archives import DEVKIT_DIR, DEVKIT_TGZ, TRAIN_TAR, VAL_TAR, read_devkit, scan_train_tar, scan_val_tar
from .config import BuildError
from .sources import UNREADABLE, Scan, Source, is_image_name

log = logging.getLogger(__name__)

VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.[A-Za-z]+$")
KAGGLE_DATA = ("ILSVRC", "Data", "CLS-LOC")
EXPECTED = """expected one of these layouts under ROOT:
  folders : ROOT/train/<wnid>/*.JPEG  and optionally ROOT/val/<wnid>/*.JPEG
  kaggle  : ROOT/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG, ROOT/ILSVRC/Data/CLS-LOC/val/*.JPEG,
            ROOT/LOC_val_solution.csv, ROOT/LOC_synset_mapping.txt
  devkit  : ROOT/train/<wnid>/*.JPEG, ROOT/val/ILSVRC2012_val_<8 digits>.JPEG (flat), and
            ROOT/ILSVRC2012_devkit_t12/ or ROOT/ILSVRC2012_devkit_t12.tar.gz
  archives: ROOT/ILSVRC2012_img_train.tar, optionally ROOT/ILSVRC2012_img_val.tar and
            ROOT/ILSVRC2012_devkit_t12.tar.gz (read in place, not extracted)"""


def _is_wnid(name: str) -> bool:
    return name in imagenet1k_index()


def _subdirs_are_wnids(d: Path) -> bool:
    try:
        return any(e.is_dir() and _is_wnid(e.name) for e in os.scandir(d))
    except OSError:
        return False


def _has_flat_val(d: Path) -> bool:
    try:
        return any(e.is_file() and VAL_NAME.match(e.name) for e in os.scandir(d))
    except OSError:
        return False


def _has_devkit(root: Path) -> bool:
    return (root / DEVKIT_DIR).is_dir() or (root / DEVKIT_TGZ).is_file()


def detect_layout(root: Path) -> str:
    """The first layout whose marker files exist under ``root`` (BuildError listing all if none)."""
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a directory (the ImageNet copy to read)")
    if (root / TRAIN_TAR).is_file():
        return "archives"
    if root.joinpath(*KAGGLE_DATA, "train").is_dir():
        return "kaggle"
    if _subdirs_are_wnids(root / "train"):
        if _has_flat_val(root / "val") and not _subdirs_are_wnids(root / "val"):
            if not _has_devkit(root):
                raise BuildError(f"{root}/val holds flat ILSVRC2012_val_*.JPEG files (devkit layout) but their "
                                 f"labels are missing: put {DEVKIT_DIR}/ or {DEVKIT_TGZ} in {root}, "
                                 f"or sort val into val/<wnid>/ folders (folders layout)")
            return "devkit"
        return "folders"
    try:
        found = sorted(os.listdir(root))
    except OSError as exc:
        raise BuildError(f"cannot list --root {root}: {exc}") from None
    shown = ", ".join(found[:12]) + (f", ... ({len(found)} entries)" if len(found) > 12 else "")
    raise BuildError(f"--root {root} matches no ImageNet layout; found: {shown or '(empty directory)'}\n{EXPECTED}")


def _scan_class_dirs(train_dir: Path, rel_prefix: str, wnids: set[str], scan: Scan) -> None:
    """``train_dir/<wnid>/*`` for the chosen wnids."""
    for entry in sorted(os.scandir(train_dir), key=lambda e: e.name):
        rel = f"{rel_prefix}/{entry.name}"
        if not entry.is_dir():
            scan.ignored.append(f"{rel} (not a class folder)")
            continue
        if not _is_wnid(entry.name):
            scan.ignored.append(f"{rel}/ (folder name is not an ImageNet-1k wnid)")
            continue
        if entry.name not in wnids:
            continue
        scan.train_wnids.add(entry.name)
        _scan_files(Path(entry.path), rel, "train", entry.name, scan)


def _image_entries(d: Path, rel_prefix: str, scan: Scan, subfolder_note: str = "sub-folder"):
    """Yield ``(DirEntry, relative path)`` of the image files in ``d``, sorted by name; count the rest as ignored."""
    for e in sorted(os.scandir(d), key=lambda e: e.name):
        rel = f"{rel_prefix}/{e.name}"
        if e.is_dir():
            scan.ignored.append(f"{rel}/ ({subfolder_note})")
        elif not is_image_name(e.name):
            scan.ignored.append(f"{rel} (not an image file name)")
        else:
            yield e, rel


def _size(e: os.DirEntry, rel: str, split: str, scan: Scan) -> int | None:
    """The file's size, or None after listing it as skipped (a dangling symlink, an unreadable entry)."""
    try:
        return e.stat().st_size
    except OSError as exc:
        dangling = e.is_symlink() and not os.path.exists(e.path)
        why = "dangling symlink (its target does not exist)" if dangling else exc.strerror or type(exc).__name__
        scan.skipped.append({"source": rel, "split": "test" if split == "val" else "train",
                             "reason": f"{UNREADABLE} ({why})"})
        return None


def _scan_files(d: Path, rel_prefix: str, split: str, wnid: str, scan: Scan) -> None:
    for e, rel in _image_entries(d, rel_prefix, scan):
        if (size := _size(e, rel, split, scan)) is not None:
            scan.sources.append(Source(split, wnid, rel, size, e.path))


def _scan_flat_val(val_dir: Path, rel_prefix: str, label_of, wnids: set[str], scan: Scan) -> None:
    """Flat validation images labelled by ``label_of(filename) -> wnid | None``."""
    for e, rel in _image_entries(val_dir, rel_prefix, scan, "sub-folder in a flat val folder"):
        wnid = label_of(e.name)
        if wnid is None:
            scan.skipped.append({"source": rel, "split": "test", "reason": "no ground-truth label for this file"})
        elif wnid in wnids and (size := _size(e, rel, "val", scan)) is not None:
            scan.sources.append(Source("val", wnid, rel, size, e.path))


def _devkit_labeller(gt_ids: list[int], id_to_wnid: dict[int, str]):
    def label_of(name: str) -> str | None:
        m = VAL_NAME.match(name)
        if not m:
            return None
        i = int(m.group(1))
        return id_to_wnid.get(gt_ids[i - 1]) if 1 <= i <= len(gt_ids) else None
    return label_of


def read_kaggle_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv``: ImageId -> wnid (first token of PredictionString)."""
    labels = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or {"ImageId", "PredictionString"} - set(reader.fieldnames):
            raise BuildError(f"{path}: expected columns ImageId,PredictionString, found {reader.fieldnames}")
        for row in reader:
            tokens = row["PredictionString"].split()
            if tokens and _is_wnid(tokens[0]):
                labels[row["ImageId"]] = tokens[0]
    return labels


def _scan_folders(root: Path, wnids: set[str], scan: Scan, flat_val_labeller=None) -> None:
    _scan_class_dirs(root / "train", "train", wnids, scan)
    val = root / "val"
    if not val.is_dir():
        scan.notes["val"] = f"{val} does not exist: the source has no validation images"
        return
    if flat_val_labeller is not None:
        _scan_flat_val(val, "val", flat_val_labeller, wnids, scan)
        return
    for entry in sorted(os.scandir(val), key=lambda e: e.name):
        rel = f"val/{entry.name}"
        if not entry.is_dir():
            scan.ignored.append(f"{rel} (not in a val/<wnid>/ folder)")
        elif not _is_wnid(entry.name):
            scan.ignored.append(f"{rel}/ (folder name is not an ImageNet-1k wnid)")
        elif entry.name in wnids:
            _scan_files(Path(entry.path), rel, "val", entry.name, scan)


def _scan_kaggle(root: Path, wnids: set[str], scan: Scan) -> None:
    data = root.joinpath(*KAGGLE_DATA)
    _scan_class_dirs(data / "train", "/".join(KAGGLE_DATA) + "/train", wnids, scan)
    val = data / "val"
    if not val.is_dir() or not any(is_image_name(n) for n in os.listdir(val)):
        scan.notes["val"] = f"{val} holds no images: the source has no validation images"
        return
    solution = root / "LOC_val_solution.csv"
    if not solution.is_file():
        raise BuildError(f"kaggle layout: {val} holds images but their labels file {solution} is missing; "
                         f"download LOC_val_solution.csv from the Kaggle competition into {root}")
    labels = read_kaggle_solution(solution)
    _scan_flat_val(val, "/".join(KAGGLE_DATA) + "/val",
                   lambda name: labels.get(os.path.splitext(name)[0]), wnids, scan)


def _scan_archives(root: Path, wnids: set[str], scan: Scan) -> None:
    scan_train_tar(root / TRAIN_TAR, wnids, scan)
    val_tar = root / VAL_TAR
    if not val_tar.is_file():
        scan.notes["val"] = f"{val_tar} does not exist: the source has no validation images"
        return
    if not _has_devkit(root):
        raise BuildError(f"archives layout: {val_tar} needs the labels in {root / DEVKIT_TGZ} (or an extracted "
                         f"{DEVKIT_DIR}/); add it, or move {VAL_TAR} away to build without a test split")
    gt_ids, id_to_wnid = read_devkit(root)
    label_of = _devkit_labeller(gt_ids, id_to_wnid)
    scan_val_tar(val_tar, label_of, wnids, scan)


def scan_root(root: Path, layout: str, wnids: list[str]) -> Scan:
    """Detect (``layout="auto"``) or check the layout, then list the chosen classes' images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a directory (the ImageNet copy to read)")
    if layout == "auto":
        layout = detect_layout(root)
        log.info("detected layout %r under %s", layout, root)
    chosen = set(wnids)
    scan = Scan(layout)
    try:
        if layout == "archives":
            if not (root / TRAIN_TAR).is_file():
                raise BuildError(f"--layout archives: {root / TRAIN_TAR} does not exist\n{EXPECTED}")
            _scan_archives(root, chosen, scan)
        elif layout == "kaggle":
            if not root.joinpath(*KAGGLE_DATA, "train").is_dir():
                raise BuildError(f"--layout kaggle: {root.joinpath(*KAGGLE_DATA, 'train')} does not exist\n{EXPECTED}")
            _scan_kaggle(root, chosen, scan)
        elif layout in ("folders", "devkit"):
            if not (root / "train").is_dir():
                raise BuildError(f"--layout {layout}: {root / 'train'} does not exist\n{EXPECTED}")
            labeller = None
            if layout == "devkit":
                if not _has_devkit(root):
                    raise BuildError(f"--layout devkit: neither {root / DEVKIT_DIR} nor {root / DEVKIT_TGZ} "
                                     f"exists\n{EXPECTED}")
                labeller = _devkit_labeller(*read_devkit(root))
            _scan_folders(root, chosen, scan, labeller)
        else:
            raise ValueError(f"unknown layout {layout!r}")
    except PermissionError as exc:
        raise BuildError(f"cannot read {exc.filename}: permission denied") from None
    if not any(s.split == "val" for s in scan.sources) and "val" not in scan.notes:
        scan.notes["val"] = "the source's validation images include none of the chosen classes"
    return scan
