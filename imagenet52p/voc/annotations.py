"""PASCAL VOC annotations: the 20 classes, one image's objects, and the box convention.

Box convention (the one every detection module uses): ``x1, y1, x2, y2`` floats in continuous pixel
coordinates, origin at the top-left corner of the top-left pixel.  A VOC XML ``bndbox`` holds 1-based
inclusive pixel indices ``xmin, ymin, xmax, ymax``; the conversion is::

    x1 = xmin - 1,   y1 = ymin - 1,   x2 = xmax,   y2 = ymax
    (inverse, for devkit-style files:  xmin = x1 + 1,  xmax = x2)

so ``x2 - x1 == xmax - xmin + 1`` (the devkit's width) and an IoU computed on our boxes without any
``+1`` equals the devkit's IoU with its ``+1``.  A box must lie in the image:
``0 <= x1 <= x2 <= width`` and ``0 <= y1 <= y2 <= height``.

``difficult`` and ``truncated`` missing from an object read as 0, as in the devkit (``VOCreadxml``)
and py-faster-rcnn.  Labels are ``VOC_CLASSES.index(name) + 1`` (0 is torchvision's background).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

#: The 20 PASCAL VOC classes in the devkit's order (``VOCinit.m``); label = index + 1.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class VOCObject:
    """One annotated object: ``box`` = ``(x1, y1, x2, y2)`` in the module's convention."""
    name: str
    label: int
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class VOCImage:
    """One image of a VOC set: ``image_id`` = ``"<year>_<name>"``, ``path`` = absolute JPEG path."""
    image_id: str
    year: str
    name: str
    path: str
    width: int
    height: int
    objects: tuple[VOCObject, ...]


def voc_to_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """VOC 1-based inclusive pixel indices -> ``(x1, y1, x2, y2)`` (see the module docstring)."""
    return (float(xmin) - 1.0, float(ymin) - 1.0, float(xmax), float(ymax))


def box_to_voc(box) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` -> VOC ``(xmin, ymin, xmax, ymax)``: the inverse of :func:`voc_to_box`."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 + 1.0, y1 + 1.0, x2, y2)


def _text(node, tag: str, where: str, path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{path}: {where} has no <{tag}>; expected a VOC annotation with <{tag}> in {where}")
    return child.text.strip()


def _number(node, tag: str, where: str, path, cast=float):
    text = _text(node, tag, where, path)
    try:
        value = cast(text) if cast is float else cast(float(text))
        if not math.isfinite(value):
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise ValueError(f"{path}: <{tag}> in {where} is {text!r}, expected a number") from None
    if cast is not float and value != float(text):
        raise ValueError(f"{path}: <{tag}> in {where} is {text!r}, expected an integer")
    return value


def _flag(node, tag: str, where: str, path) -> bool:
    """A 0/1 flag; missing reads as 0 (the devkit's default)."""
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False
    text = child.text.strip()
    if text not in ("0", "1"):
        raise ValueError(f"{path}: <{tag}> of {where} is {text!r}, expected 0 or 1")
    return text == "1"


def _parse_object(obj, k: int, width: int, height: int, path) -> VOCObject:
    name = _text(obj, "name", f"object {k}", path)
    where = f"object {k} ({name})"
    if name not in VOC_CLASSES:
        raise ValueError(f"{path}: {where} has unknown class {name!r}; valid classes: {', '.join(VOC_CLASSES)}")
    bb = obj.find("bndbox")
    if bb is None:
        raise ValueError(f"{path}: {where} has no <bndbox>; expected <bndbox> with xmin, ymin, xmax, ymax")
    xmin, ymin, xmax, ymax = (_number(bb, t, f"<bndbox> of {where}", path) for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmin > xmax or ymin > ymax:
        raise ValueError(f"{path}: {where} has xmin..xmax {xmin:g}..{xmax:g}, ymin..ymax {ymin:g}..{ymax:g}; "
                         "expected xmin <= xmax and ymin <= ymax")
    box = voc_to_box(xmin, ymin, xmax, ymax)
    if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
        raise ValueError(f"{path}: {where} box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is outside "
                         f"the {width}x{height} image; expected 1 <= xmin, xmax <= {width}, 1 <= ymin, "
                         f"ymax <= {height}")
    return VOCObject(name=name, label=VOC_CLASSES.index(name) + 1, box=box,
                     difficult=_flag(obj, "difficult", where, path), truncated=_flag(obj, "truncated", where, path))


def parse_annotation(xml_path: str | Path, year: str, jpeg_path: str | Path | None = None) -> VOCImage:
    """Read one VOC XML file into a :class:`VOCImage` (``ValueError`` naming the file if malformed).

    ``name`` is the XML file's stem; ``path`` is ``jpeg_path`` if given, else
    ``<xml folder>/../JPEGImages/<name>.jpg`` (the devkit layout), made absolute.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{xml_path}: not readable XML ({exc}); expected a VOC annotation file") from None
    if root.tag != "annotation":
        raise ValueError(f"{xml_path}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise ValueError(f"{xml_path}: no <size>; expected <size> with <width> and <height>")
    width, height = (_number(size, t, "<size>", xml_path, cast=int) for t in ("width", "height"))
    if width <= 0 or height <= 0:
        raise ValueError(f"{xml_path}: <size> is {width}x{height}, expected positive width and height")
    objects = tuple(_parse_object(obj, k, width, height, xml_path) for k, obj in enumerate(root.findall("object")))
    name = xml_path.stem
    if jpeg_path is None:
        jpeg_path = xml_path.parent.parent / "JPEGImages" / f"{name}.jpg"
    return VOCImage(image_id=f"{year}_{name}", year=str(year), name=name, path=str(Path(jpeg_path).absolute()),
                    width=width, height=height, objects=objects)
