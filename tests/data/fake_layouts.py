"""Test fixture (not library code): fake ImageNet copies in every input layout, with the quirks
real copies have (import with ``from fake_layouts import ...``; tests/conftest.py puts tests/data on
``sys.path``).

Start from a ``folders`` tree written by :func:`imagenet52p.fake.make_fake_imagenet`, optionally
:func:`plant_quirks` in it, then turn it into the other layouts:

* :func:`to_kaggle`    ``ILSVRC/Data/CLS-LOC/{train/<wnid>/, val/}`` + ``LOC_val_solution.csv`` +
  ``LOC_synset_mapping.txt``
* :func:`to_devkit`    ``train/<wnid>/`` + flat ``val/`` + ``ILSVRC2012_devkit_t12/`` (or its ``.tar.gz``),
  whose ``meta.mat`` gives the 1000 classes ILSVRC2012_IDs in a seeded shuffled order (as in the real
  devkit, where the order is not the sorted-wnid order) plus non-leaf synsets.
* :func:`to_archives`  ``ILSVRC2012_img_train.tar`` (tar of per-class tars), ``ILSVRC2012_img_val.tar``,
  ``ILSVRC2012_devkit_t12.tar.gz``.

Validation files must be named ``ILSVRC2012_val_<8 digits>.<ext>`` (as the fake generator names them)
for the flat layouts.  Everything is deterministic.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imagenet52p.classes import imagenet1k_names, imagenet1k_wnids
from imagenet52p.fake import FakeSpec, render_image

VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.")
DEVKIT = "ILSVRC2012_devkit_t12"


@dataclass(frozen=True)
class Quirk:
    """A planted file and what the builder must do with it.

    rel: path in the folders tree.  expect: ``kept`` (byte copy), ``converted`` (re-encoded, reason
    contains ``reason``), ``skipped`` (listed with a reason containing ``reason``) or ``ignored``
    (counted, not in any shard).  wnid/split: the label and source split (None for ignored ones).
    """

    rel: str
    expect: str
    reason: str = ""
    wnid: str | None = None
    split: str | None = None


def _jpeg(arr: np.ndarray, mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").convert(mode).save(buf, format=kw.pop("format", "JPEG"), **kw)
    return buf.getvalue()


def quirk_files(wnids: list[str], spec: FakeSpec) -> list[tuple[Quirk, bytes]]:
    """The planted train files: (quirk, bytes).  Needs at least 3 wnids."""
    if len(wnids) < 3:
        raise ValueError(f"plant_quirks needs at least 3 classes, got {len(wnids)}")
    a, b, c = sorted(wnids)[:3]
    img = {w: render_image(w, 10_000 + i, spec, "train") for i, w in enumerate((a, b, c))}
    rng = np.random.default_rng(spec.seed)
    ok_jpeg = _jpeg(img[a], quality=spec.quality)
    t = "train"
    return [
        (Quirk(f"{t}/{a}/{a}_cmyk.JPEG", "converted", "CMYK", a, t), _jpeg(img[a], "CMYK")),
        (Quirk(f"{t}/{b}/{b}_gray.JPEG", "converted", "grayscale", b, t), _jpeg(img[b], "L")),
        (Quirk(f"{t}/{c}/{c}_palette.JPEG", "converted", "PNG data", c, t), _jpeg(img[c], "P", format="PNG")),
        (Quirk(f"{t}/{a}/{a}_png.JPEG", "converted", "PNG data", a, t), _jpeg(img[a], format="PNG")),
        (Quirk(f"{t}/{b}/{b}_prog.JPEG", "converted", "progressive", b, t), _jpeg(img[b], progressive=True)),
        (Quirk(f"{t}/{a}/{a}_empty.JPEG", "skipped", "empty", a, t), b""),
        (Quirk(f"{t}/{b}/{b}_trunc.JPEG", "skipped", "truncated", b, t), ok_jpeg[: len(ok_jpeg) // 2]),
        (Quirk(f"{t}/{c}/{c}_garbage.JPEG", "skipped", "not a readable image", c, t),
         rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()),
        (Quirk(f"{t}/{a}/{a}_7.extra.JPEG", "kept", "", a, t), ok_jpeg),
        (Quirk(f"{t}/{a}/{a}_7_extra.JPEG", "kept", "", a, t), _jpeg(img[a], quality=70)),  # same key
        (Quirk(f"{t}/{c}/{c}_lower.jpg", "kept", "", c, t), _jpeg(img[c])),
        (Quirk(f"{t}/{a}/notes.txt", "ignored"), b"not an image\n"),
        (Quirk(f"{t}/{b}/.DS_Store", "ignored"), b"\0\0\0\1Bud1"),
        (Quirk(f"{t}/not_a_class/{a}_9.JPEG", "ignored"), ok_jpeg),
        (Quirk(f"{t}/README.txt", "ignored"), b"readme\n"),
    ]


def plant_quirks(root: str | Path, wnids: list[str], spec: FakeSpec | None = None) -> list[Quirk]:
    """Add quirky files to the folders tree at ``root``; return what the builder must do with each.

    Train: CMYK, grayscale, palette-PNG and PNG data named ``.JPEG``, progressive, zero-byte,
    truncated and random-bytes files, a dotted stem and a file colliding with its key, a ``.jpg``,
    non-image files, a non-wnid folder.  Val: the first image of the first class becomes CMYK
    (converted, same label) and the first of the second class is cut in half (skipped).
    """
    spec = spec or FakeSpec()
    root = Path(root)
    quirks = []
    for q, data in quirk_files(list(wnids), spec):
        p = root / q.rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        quirks.append(q)
    for wnid, kind in zip(sorted(wnids)[:2], ("cmyk", "trunc")):
        files = sorted((root / "val" / wnid).glob("*.JPEG")) if (root / "val" / wnid).is_dir() else []
        if not files:
            continue
        p = files[0]
        arr = np.asarray(Image.open(p).convert("RGB"))
        if kind == "cmyk":
            p.write_bytes(_jpeg(arr, "CMYK"))
            quirks.append(Quirk(p.relative_to(root).as_posix(), "converted", "CMYK", wnid, "val"))
        else:
            data = p.read_bytes()
            p.write_bytes(data[: len(data) // 2])
            quirks.append(Quirk(p.relative_to(root).as_posix(), "skipped", "truncated", wnid, "val"))
    return quirks


def _val_files(src: Path) -> list[tuple[str, Path]]:
    """(wnid, path) of every file in ``src/val/<wnid>/``."""
    out = []
    val = src / "val"
    if val.is_dir():
        for d in sorted(p for p in val.iterdir() if p.is_dir()):
            out.extend((d.name, f) for f in sorted(d.iterdir()) if f.is_file())
    return out


def to_kaggle(src: str | Path, dst: str | Path) -> Path:
    """Kaggle's ``imagenet-object-localization-challenge`` layout of the folders tree ``src``."""
    src, dst = Path(src), Path(dst)
    data = dst / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(src / "train", data / "train")
    (data / "val").mkdir(parents=True)
    rows = []
    for wnid, f in _val_files(src):
        shutil.copy(f, data / "val" / f.name)
        rows.append((f.stem, f"{wnid} 10 20 30 40 {wnid} 5 5 9 9"))
    with open(dst / "LOC_val_solution.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ImageId", "PredictionString"])
        w.writerows(sorted(rows))
    names = imagenet1k_names()
    (dst / "LOC_synset_mapping.txt").write_text("".join(f"{w} {names[w]}\n" for w in imagenet1k_wnids()))
    return dst


def devkit_ids(seed: int = 0) -> dict[str, int]:
    """wnid -> ILSVRC2012_ID of the fake devkit: a seeded permutation of 1..1000 (not sorted order)."""
    perm = np.random.default_rng(seed + 2012).permutation(1000) + 1
    return {w: int(i) for w, i in zip(imagenet1k_wnids(), perm)}


def write_devkit(dst_dir: Path, val_labels: dict[int, str], seed: int = 0) -> Path:
    """``dst_dir/ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}``.

    ``val_labels``: validation image number -> wnid.  Numbers without an image get label 1.
    """
    import scipy.io

    ids = devkit_ids(seed)
    names = imagenet1k_names()
    rows = [(i, w, names[w], "a fake gloss", 0, np.zeros(0), 0, 1300) for w, i in ids.items()]
    rows.sort()
    # non-leaf synsets come after the leaves, as in the real meta.mat
    rows += [(1000 + k, f"n0000{k:04d}", f"group {k}", "", 2, np.array([k, k + 1]), 1, 0) for k in range(1, 6)]
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
          ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    synsets = np.zeros((len(rows), 1), dtype=dt)
    for k, r in enumerate(rows):
        synsets[k, 0] = r
    data = dst_dir / DEVKIT / "data"
    data.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    n = max(val_labels, default=0)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ids[val_labels[i]] if i in val_labels else 1}\n" for i in range(1, n + 1)))
    return dst_dir / DEVKIT


def _val_numbers(src: Path) -> dict[int, str]:
    out = {}
    for wnid, f in _val_files(src):
        m = VAL_NAME.match(f.name)
        if m:
            out[int(m.group(1))] = wnid
    return out


def _tgz(dir_path: Path, dst: Path) -> None:
    with tarfile.open(dst, "w:gz") as tf:
        tf.add(dir_path, arcname=dir_path.name)


def to_devkit(src: str | Path, dst: str | Path, tgz: bool = False, seed: int = 0) -> Path:
    """``train/<wnid>/``, flat ``val/`` and the devkit (a folder, or ``.tar.gz`` if ``tgz``)."""
    src, dst = Path(src), Path(dst)
    shutil.copytree(src / "train", dst / "train")
    (dst / "val").mkdir(parents=True)
    for _wnid, f in _val_files(src):
        shutil.copy(f, dst / "val" / f.name)
    kit = write_devkit(dst, _val_numbers(src), seed)
    if tgz:
        _tgz(kit, dst / f"{DEVKIT}.tar.gz")
        shutil.rmtree(kit)
    return dst


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


def to_archives(src: str | Path, dst: str | Path, with_val: bool = True, seed: int = 0) -> Path:
    """The three official archives of the folders tree ``src`` in ``dst`` (val tar and devkit if ``with_val``)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dst / "ILSVRC2012_img_train.tar", "w", format=tarfile.USTAR_FORMAT) as outer:
        for d in sorted((src / "train").iterdir()):
            if not d.is_dir() or d.name not in set(imagenet1k_wnids()):
                continue
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as inner:
                for f in sorted(d.iterdir()):
                    if f.is_file():
                        _add_bytes(inner, f.name, f.read_bytes())
            _add_bytes(outer, f"{d.name}.tar", buf.getvalue())
        _add_bytes(outer, "README.txt", b"not a class archive\n")
    if with_val:
        with tarfile.open(dst / "ILSVRC2012_img_val.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for _wnid, f in sorted(_val_files(src), key=lambda t: t[1].name):
                _add_bytes(tf, f.name, f.read_bytes())
        tmp = dst / "_devkit_tmp"
        kit = write_devkit(tmp, _val_numbers(src), seed)
        _tgz(kit, dst / f"{DEVKIT}.tar.gz")
        shutil.rmtree(tmp)
    return dst


__all__ = ["Quirk", "plant_quirks", "quirk_files", "to_kaggle", "to_devkit", "to_archives", "write_devkit",
           "devkit_ids"]
