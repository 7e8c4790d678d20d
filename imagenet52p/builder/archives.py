"""The official ImageNet archives, read in place, and the devkit labels.

``ILSVRC2012_img_train.tar`` is an uncompressed tar of 1000 uncompressed per-class tars
(``n01440764.tar`` holding ``n01440764_10026.JPEG`` ...).  Only the headers are read while
scanning (``tarfile`` seeks over member data), and only the inner tars of the chosen classes are
opened; each image becomes a :class:`~.sources.Source` with its absolute byte offset in the outer
archive, so workers read it with one ``pread`` and nothing is extracted to disk.

Devkit (``ILSVRC2012_devkit_t12/`` or ``ILSVRC2012_devkit_t12.tar.gz``):
``data/ILSVRC2012_validation_ground_truth.txt`` holds one ILSVRC2012_ID per validation image
(line *i* = ``ILSVRC2012_val_<i:08d>.JPEG``), and ``data/meta.mat`` maps ILSVRC2012_ID to wnid.
The IDs are NOT in sorted-wnid order, so the mapping must come from ``meta.mat``.
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

from ..classes import imagenet1k_wnids
from .config import BuildError
from .sources import Scan, Source, is_image_name

log = logging.getLogger(__name__)

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TGZ = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")  # uncompressed only: offsets must be real file offsets
    except tarfile.ReadError as exc:
        raise BuildError(f"{path} is not an uncompressed tar archive ({exc}); the official ImageNet archives "
                         f"are plain .tar files") from None


def scan_train_tar(path: Path, wnids: set[str], scan: Scan) -> None:
    """Add the images of the chosen classes in ``ILSVRC2012_img_train.tar`` to ``scan``."""
    known = set(imagenet1k_wnids())
    with _open_tar(path) as outer:
        for m in outer:
            rel = f"{path.name}/{m.name}"
            stem, ext = (m.name.rsplit(".", 1) + [""])[:2]
            if not m.isfile() or ext != "tar" or stem not in known:
                scan.ignored.append(f"{rel} (not a <wnid>.tar class archive)")
                continue
            if stem not in wnids:
                continue
            scan.train_wnids.add(stem)
            fobj = outer.extractfile(m)
            try:
                inner = tarfile.open(fileobj=fobj, mode="r:")
            except tarfile.ReadError as exc:
                raise BuildError(f"{rel} inside {path} is not a tar archive ({exc})") from None
            with inner:
                for im in inner:
                    irel = f"{rel}/{im.name}"
                    if not im.isfile() or not is_image_name(im.name.rsplit("/", 1)[-1]):
                        scan.ignored.append(f"{irel} (not an image file)")
                        continue
                    scan.sources.append(Source("train", stem, irel, im.size, str(path),
                                               m.offset_data + im.offset_data))


def scan_val_tar(path: Path, label_of, wnids: set[str], scan: Scan) -> None:
    """Add the chosen classes' images of ``ILSVRC2012_img_val.tar`` (labels by ``label_of(name)``)."""
    with _open_tar(path) as tf:
        for m in tf:
            rel = f"{path.name}/{m.name}"
            base = m.name.rsplit("/", 1)[-1]
            if not m.isfile() or not is_image_name(base):
                scan.ignored.append(f"{rel} (not an image file)")
                continue
            wnid = label_of(base)
            if wnid is None:
                scan.skipped.append({"source": rel, "split": "test", "reason": "no ground-truth label for this file"})
            elif wnid in wnids:
                scan.sources.append(Source("val", wnid, rel, m.size, str(path), m.offset_data))


def _devkit_files(root: Path) -> tuple[bytes, bytes, str]:
    """(meta.mat bytes, ground-truth text bytes, where they came from)."""
    d = root / DEVKIT_DIR
    if d.is_dir():
        meta, gt = d / META, d / GROUND_TRUTH
        for p in (meta, gt):
            if not p.is_file():
                raise FileNotFoundError(f"devkit folder {d} lacks {p.relative_to(d)}")
        return meta.read_bytes(), gt.read_bytes(), str(d)
    tgz = root / DEVKIT_TGZ
    try:
        with tarfile.open(tgz, mode="r:*") as tf:
            out = []
            for name in (META, GROUND_TRUTH):
                try:
                    out.append(tf.extractfile(f"{DEVKIT_DIR}/{name}").read())
                except KeyError:
                    raise BuildError(f"{tgz} lacks {DEVKIT_DIR}/{name}") from None
    except (tarfile.ReadError, OSError, EOFError) as exc:
        raise BuildError(f"cannot read {tgz}: {exc}") from None
    return out[0], out[1], str(tgz)


def parse_meta_mat(data: bytes, where: str = "meta.mat") -> dict[int, str]:
    """ILSVRC2012_ID -> wnid for the 1000 leaf synsets (``num_children == 0``) of a devkit ``meta.mat``."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        ids = [int(x) for x in synsets["ILSVRC2012_ID"]]
        wnids = [str(x) for x in synsets["WNID"]]
        children = [int(x) for x in synsets["num_children"]]
    except Exception as exc:  # scipy raises many types for a damaged file
        raise BuildError(f"{where}: cannot read the synsets table of meta.mat ({type(exc).__name__}: {exc})") from None
    mapping = {i: w for i, w, c in zip(ids, wnids, children) if c == 0}
    unknown = sorted(set(mapping.values()) - set(imagenet1k_wnids()))
    if unknown:
        raise BuildError(f"{where}: meta.mat names wnids that are not ImageNet-1k classes: {unknown[:5]}")
    return mapping


def read_devkit(root: Path) -> tuple[list[int], dict[int, str]]:
    """(ground-truth ILSVRC2012_IDs in image order, ILSVRC2012_ID -> wnid)."""
    meta, gt, where = _devkit_files(root)
    mapping = parse_meta_mat(meta, where)
    try:
        gt_ids = [int(line) for line in gt.decode().split()]
    except ValueError:
        raise BuildError(f"{where}: {GROUND_TRUTH} must hold one integer ILSVRC2012_ID per line") from None
    bad = sorted({i for i in gt_ids if i not in mapping})
    if bad:
        raise BuildError(f"{where}: ground-truth IDs {bad[:5]} are not leaf synsets in meta.mat")
    log.info("devkit %s: %d validation labels", where, len(gt_ids))
    return gt_ids, mapping
