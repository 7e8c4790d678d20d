"""A synthetic VOCdevkit for tests and the CPU demo, laid out and annotated exactly as the real one.

``make_fake_voc(root, ...)`` writes::

    root/VOCdevkit/VOC<year>/Annotations/<id>.xml
                             JPEGImages/<id>.jpg
                             ImageSets/Main/{train,val,trainval[,test]}.txt

VOC2007 ids are ``000001, 000002, ...`` (test ids interleaved with trainval ids, as in the real set);
VOC2012 ids are ``2012_000001, ...`` and VOC2012 has no test list.  ``train``/``val`` alternate over the
sorted trainval ids.  The XML has the devkit's elements (folder, filename, size, segmented, object with
name, pose, truncated, difficult, bndbox of 1-based inclusive integer pixels), so
``torchvision.datasets.VOCDetection`` reads the tree unchanged.

Content: a grey textured background and 1..``max_objects`` objects whose look depends on the class
only: a shape (rectangle, ellipse, triangle, diamond, ring; class index mod 5), a stripe orientation
(0/45/90/135 degrees; class index div 5), a hue (class index / 20) and an aspect ratio, so a tiny
detector can learn them.  A ``truncated_fraction`` of objects is cut by the image border (truncated=1);
a ``difficult_fraction`` is drawn small and faint (difficult=1).  Each box is the tight box of the
object's visible pixels.  Output is a function of the arguments only: the same call writes
byte-identical files (fixed XML text, fixed JPEG quality, no timestamps).
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fake import encode_jpeg
from .annotations import VOC_CLASSES

_SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "ring")
_ASPECTS = (1.0, 0.7, 1.4)  # height / width


@dataclass(frozen=True)
class FakeObject:
    """What the generator drew: the devkit's 1-based inclusive ``xmin, ymin, xmax, ymax``."""
    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool
    truncated: bool


@dataclass
class FakeVOC:
    """The written tree: ``sets[(year, set)]`` = ids in list order, ``objects[(year, id)]`` = drawn
    :class:`FakeObject` s, ``sizes[(year, id)]`` = (width, height)."""
    devkit: Path
    sets: dict = field(default_factory=dict)
    objects: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)


def _rng(*key) -> np.random.Generator:
    digest = hashlib.sha256(":".join(str(k) for k in key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def class_look(name: str) -> dict:
    """The class's shape, stripe angle (radians), RGB colour and aspect ratio (height / width)."""
    k = VOC_CLASSES.index(name)
    rgb = colorsys.hsv_to_rgb(k / len(VOC_CLASSES), 0.85, 0.95)
    return {"shape": _SHAPES[k % 5], "angle": (k // 5) * np.pi / 4, "color": np.array(rgb) * 255.0,
            "aspect": _ASPECTS[k % 3]}


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside the shape, in object coordinates ``u, v`` in [-1, 1]."""
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    r2 = u * u + v * v
    if shape == "ellipse":
        inside &= r2 <= 1
    elif shape == "triangle":
        inside &= np.abs(u) <= (v + 1) / 2
    elif shape == "diamond":
        inside &= np.abs(u) + np.abs(v) <= 1
    elif shape == "ring":
        inside &= (r2 <= 1) & (r2 >= 0.4)
    return inside


def _background(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, period, phase = rng.uniform(0, np.pi), rng.uniform(14, 30), rng.uniform(0, 2 * np.pi)
    tex = np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period + phase) * rng.uniform(8, 20)
    base = rng.uniform(95, 160) + rng.uniform(-12, 12, size=3)
    return base[None, None, :] + tex[..., None] + rng.normal(0, 5, size=(h, w, 3))


def _place(rng, w: int, h: int, ow: float, oh: float, truncated: bool) -> tuple[float, float]:
    """Top-left corner of an ``ow x oh`` object: inside the image, or 25-50% past one border."""
    x0, y0 = rng.uniform(0, max(w - ow, 0)), rng.uniform(0, max(h - oh, 0))
    if truncated:
        side, cut = int(rng.integers(4)), rng.uniform(0.25, 0.5)
        x0 = -cut * ow if side == 0 else (w - (1 - cut) * ow if side == 1 else x0)
        y0 = -cut * oh if side == 2 else (h - (1 - cut) * oh if side == 3 else y0)
    return x0, y0


def _draw(img, rng, name: str, difficult: bool, truncated: bool, taken: list):
    """Paint one object; return its :class:`FakeObject`, or None if it would hide another one."""
    h, w = img.shape[:2]
    look = class_look(name)
    side = rng.uniform(0.12, 0.2) if difficult else rng.uniform(0.3, 0.5)
    jitter = rng.uniform(0.9, 1.1)
    ow = side * min(w, h) / np.sqrt(look["aspect"]) * jitter
    oh = side * min(w, h) * np.sqrt(look["aspect"]) / jitter
    x0, y0 = _place(rng, w, h, ow, oh, truncated)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    mask = _shape_mask(look["shape"], (xx - x0 - ow / 2) / (ow / 2), (yy - y0 - oh / 2) / (oh / 2))
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if len(cols) < 4 or len(rows) < 4:
        return None
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)  # x1, y1, x2, y2
    if any(_iou(box, other) > 0.25 for other in taken):
        return None
    a = look["angle"]
    stripes = np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / 6.0)
    paint = look["color"][None, None, :] * (0.72 + 0.28 * stripes[..., None])
    alpha = 0.5 if difficult else 1.0
    img[mask] = alpha * paint[mask] + (1 - alpha) * img[mask]
    taken.append(box)
    return FakeObject(name, box[0] + 1, box[1] + 1, box[2], box[3], difficult, truncated)


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render(key: str, classes, size, seed: int, difficult_fraction: float, truncated_fraction: float,
           max_objects: int) -> tuple[np.ndarray, list[FakeObject]]:
    """One image (H x W x 3 uint8) and its objects; a function of the arguments only."""
    rng = _rng(seed, key)
    w, h = (int(rng.integers(size[0], size[1] + 1)) for _ in range(2))
    img = _background(rng, h, w)
    objects, taken = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        name = classes[int(rng.integers(len(classes)))]
        difficult, truncated = rng.random() < difficult_fraction, rng.random() < truncated_fraction
        for _try in range(10):
            obj = _draw(img, rng, name, difficult, truncated, taken)
            if obj is not None:
                objects.append(obj)
                break
    return np.clip(img, 0, 255).astype(np.uint8), objects


def annotation_xml(year: str, image: str, width: int, height: int, objects) -> str:
    """The devkit's XML text for one image (tab-indented, as the real files)."""
    lines = ["<annotation>", f"\t<folder>VOC{year}</folder>", f"\t<filename>{image}.jpg</filename>",
             "\t<source>", f"\t\t<database>imagenet52p synthetic VOC{year}</database>", "\t</source>",
             "\t<size>", f"\t\t<width>{width}</width>", f"\t\t<height>{height}</height>", "\t\t<depth>3</depth>",
             "\t</size>", "\t<segmented>0</segmented>"]
    for o in objects:
        lines += ["\t<object>", f"\t\t<name>{o.name}</name>", "\t\t<pose>Unspecified</pose>",
                  f"\t\t<truncated>{int(o.truncated)}</truncated>", f"\t\t<difficult>{int(o.difficult)}</difficult>",
                  "\t\t<bndbox>", f"\t\t\t<xmin>{o.xmin}</xmin>", f"\t\t\t<ymin>{o.ymin}</ymin>",
                  f"\t\t\t<xmax>{o.xmax}</xmax>", f"\t\t\t<ymax>{o.ymax}</ymax>", "\t\t</bndbox>", "\t</object>"]
    return "\n".join(lines + ["</annotation>"]) + "\n"


def _year_sets(year: str, trainval: int, test: int, seed: int) -> dict[str, list[str]]:
    """Ids of each list file: test drawn at random among all ids, train/val alternating over trainval."""
    n = trainval + test
    ids = [f"{i:06d}" if year == "2007" else f"{year}_{i:06d}" for i in range(1, n + 1)]
    test_idx = set(_rng(seed, year, "test").permutation(n)[:test].tolist())
    tv = [i for k, i in enumerate(ids) if k not in test_idx]
    sets = {"train": tv[0::2], "val": tv[1::2], "trainval": tv}
    if test:
        sets["test"] = [i for k, i in enumerate(ids) if k in test_idx]
    return sets


def _check_args(root, years, trainval, test, classes, size, max_objects, fractions) -> Path:
    for y in years:
        if y not in ("2007", "2012"):
            raise ValueError(f"make_fake_voc: year {y!r}, expected 2007 or 2012")
    bad = [c for c in classes if c not in VOC_CLASSES]
    if bad or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"make_fake_voc: classes {list(classes)!r}; expected distinct names of "
                         f"{', '.join(VOC_CLASSES)}")
    if trainval < 2 or test < 0 or max_objects < 1:
        raise ValueError(f"make_fake_voc: trainval={trainval}, test={test}, max_objects={max_objects}; expected "
                         "trainval >= 2 (train and val non-empty), test >= 0, max_objects >= 1")
    if not 32 <= size[0] <= size[1]:
        raise ValueError(f"make_fake_voc: size range {tuple(size)}, expected 32 <= min <= max pixels")
    if not all(0 <= f <= 1 for f in fractions):
        raise ValueError(f"make_fake_voc: difficult/truncated fractions {fractions}, expected values in [0, 1]")
    devkit = Path(root) / "VOCdevkit"
    for y in years:
        d = devkit / f"VOC{y}"
        if d.exists() and any(d.iterdir()):
            raise FileExistsError(f"{d} already exists and is not empty; pass an empty OUT folder "
                                  "(the generator never overwrites a tree)")
    return devkit


def make_fake_voc(root, years=("2007", "2012"), trainval: int = 20, test: int = 12, classes=VOC_CLASSES,
                  size=(96, 160), seed: int = 0, difficult_fraction: float = 0.1, truncated_fraction: float = 0.15,
                  max_objects: int = 3, quality: int = 90) -> FakeVOC:
    """Write ``root/VOCdevkit`` (see the module doc): ``trainval`` images per year, ``test`` for 2007 only.

    ``size`` = (min, max) of the width and of the height, drawn per image.  Returns a :class:`FakeVOC`
    recording what was drawn (independently of any XML reader).
    """
    years, classes = tuple(str(y) for y in years), tuple(classes)
    devkit = _check_args(root, years, trainval, test, classes, size, max_objects,
                         (difficult_fraction, truncated_fraction))
    out = FakeVOC(devkit=devkit)
    for year in years:
        base = devkit / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        sets = _year_sets(year, trainval, test if year == "2007" else 0, seed)
        for image in sorted(sets["trainval"] + sets.get("test", [])):
            arr, objects = render(f"{year}/{image}", classes, size, seed, difficult_fraction, truncated_fraction,
                                  max_objects)
            (base / "JPEGImages" / f"{image}.jpg").write_bytes(encode_jpeg(arr, quality))
            xml = annotation_xml(year, image, arr.shape[1], arr.shape[0], objects)
            (base / "Annotations" / f"{image}.xml").write_text(xml, encoding="utf-8", newline="\n")
            out.objects[(year, image)] = tuple(objects)
            out.sizes[(year, image)] = (arr.shape[1], arr.shape[0])
        for name, ids in sets.items():
            (base / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids), newline="\n")
            out.sets[(year, name)] = list(ids)
    return out
