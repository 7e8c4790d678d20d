"""Which images: a VOCdevkit's root, set specs (``2007-trainval+2012-trainval``), and the val subset.

Root: the ``VOCdevkit`` folder, holding ``VOC2007/`` and/or ``VOC2012/``, each with ``Annotations/<id>.xml``,
``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<set>.txt``.  The folder above it (torchvision's
``VOCDetection`` root) is accepted too when it holds ``VOCdevkit/``.

Set spec: ``<year>-<set>`` with year 2007 (sets train, val, trainval, test) or 2012 (train, val,
trainval; VOC2012's test annotations are not public), or a union of them joined by ``+``.  Shorthands:
``07`` = ``2007-trainval``, ``12`` = ``2012-trainval``, so ``07+12`` = ``2007-trainval+2012-trainval``.
Order = the spec's order, then each list file's order.  An image in two parts of a union is an error.

Image ids read from a list file must match ``[A-Za-z0-9][A-Za-z0-9_.-]*`` without ``..``: a path read
from a file never leaves the root.

Val subset (:func:`split_val`): the ``count`` images with the smallest ``sha256(f"{seed}:{image_id}")``
(hex digest, compared as text) are val; the rest are train.  Both keep the input order.  Membership
depends on the seed and the set of ids only, never on their order; it is drawn from trainval images,
never from ``test`` (:func:`train_val_images` refuses a spec with a test set).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from .annotations import VOCImage, parse_annotation

#: Sets each year's ImageSets/Main offers (with annotations).
YEAR_SETS: dict[str, tuple[str, ...]] = {"2007": ("train", "val", "trainval", "test"),
                                         "2012": ("train", "val", "trainval")}
SHORTHANDS: dict[str, str] = {"07": "2007-trainval", "12": "2012-trainval"}
LAYOUT = ("a VOCdevkit must contain VOC<year>/Annotations/<id>.xml, VOC<year>/JPEGImages/<id>.jpg and "
          "VOC<year>/ImageSets/Main/<set>.txt")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_YEAR_DIR = re.compile(r"VOC\d{4}")


def parse_spec(spec: str) -> tuple[tuple[str, str], ...]:
    """``"2007-trainval+2012-trainval"`` (or ``"07+12"``) -> ``(("2007", "trainval"), ("2012", "trainval"))``."""
    valid = [f"{y}-{s}" for y, sets in YEAR_SETS.items() for s in sets]
    parts = []
    for raw in str(spec).split("+"):
        part = SHORTHANDS.get(raw.strip(), raw.strip())
        year, _, name = part.partition("-")
        if part == "2012-test":
            raise ValueError(f"set spec {spec!r}: VOC2012's test annotations are not public; use 2007-test")
        if year not in YEAR_SETS or name not in YEAR_SETS[year]:
            raise ValueError(f"set spec {spec!r}: unknown part {raw!r}; expected {', '.join(valid)}, the shorthands "
                             f"07, 12 (= <year>-trainval), or a union joined by '+' (e.g. 07+12)")
        if (year, name) in parts:
            raise ValueError(f"set spec {spec!r} names {part} twice")
        parts.append((year, name))
    return tuple(parts)


def spec_name(parts) -> str:
    """The canonical spelling of parsed spec parts: ``2007-trainval+2012-trainval``."""
    return "+".join(f"{y}-{s}" for y, s in parts)


def _years_in(path: Path) -> list[str]:
    return [y for y in YEAR_SETS if (path / f"VOC{y}").is_dir()]


def resolve_devkit(root: str | Path) -> Path:
    """The VOCdevkit folder for ``root`` (it, or ``root/VOCdevkit``); ``FileNotFoundError`` saying what to pass."""
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"VOC root {path} does not exist or is not a folder; pass the VOCdevkit folder "
                                f"(holding VOC2007/ and/or VOC2012/); {LAYOUT}")
    if not _years_in(path) and (path / "VOCdevkit").is_dir():
        return path / "VOCdevkit"
    if _YEAR_DIR.fullmatch(path.name) and any((path / d).exists() for d in ("Annotations", "JPEGImages", "ImageSets")):
        raise FileNotFoundError(f"VOC root {path} is one year's folder; pass its parent {path.parent} "
                                "(the VOCdevkit folder holding VOC2007/ and VOC2012/)")
    if _years_in(path):
        return path
    nested = sorted(path.glob("*/VOCdevkit"))
    if nested:
        raise FileNotFoundError(f"VOC root {path} holds no VOCdevkit/ but {nested[0]} exists; pass {nested[0]}")
    raise FileNotFoundError(f"VOC root {path} holds neither VOC2007/ nor VOC2012/ nor VOCdevkit/; pass the "
                            f"VOCdevkit folder; {LAYOUT}")


def year_dir(devkit: Path, year: str) -> Path:
    """``devkit/VOC<year>``, checked to hold Annotations/, JPEGImages/ and ImageSets/Main/."""
    base = Path(devkit) / f"VOC{year}"
    for sub in ("", "Annotations", "JPEGImages", "ImageSets/Main"):
        if not (base / sub).is_dir():
            raise FileNotFoundError(f"{base / sub if sub else base} is missing; {LAYOUT}")
    return base


def list_path(devkit: Path, year: str, name: str) -> Path:
    """``VOC<year>/ImageSets/Main/<name>.txt``, checked to exist."""
    path = year_dir(devkit, year) / "ImageSets" / "Main" / f"{name}.txt"
    if not path.is_file():
        hint = (" (VOC2007's test set is the separate archive VOCtest_06-Nov-2007.tar, extracted into the same "
                "VOCdevkit)" if (year, name) == ("2007", "test") else "")
        raise FileNotFoundError(f"{path} is missing{hint}; {LAYOUT}")
    return path


def check_image_id(text: str, path, lineno: int) -> str:
    """An id from line ``lineno`` of list file ``path``, refused (``ValueError``) unless a plain file name."""
    if not _ID.fullmatch(text) or ".." in text:
        raise ValueError(f"{path}:{lineno}: image id {text!r} is not a plain name; expected one id per line made of "
                         "letters, digits, '_', '-', '.' (no path separator, '..' or spaces: a list file must not "
                         "point outside the VOCdevkit, and per-class lists like aeroplane_train.txt are not set lists)")
    return text


def list_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of every non-blank line of a list file."""
    text = Path(path).read_text(encoding="utf-8")
    return [(k, line.strip()) for k, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_ids(path: Path) -> list[tuple[int, str]]:
    """``(line number, id)`` of a set list file; ``ValueError`` on a bad or repeated id."""
    seen: dict[str, int] = {}
    out = []
    for lineno, text in list_lines(path):
        check_image_id(text, path, lineno)
        if text in seen:
            raise ValueError(f"{path}: image id {text!r} on lines {seen[text]} and {lineno}; expected each id once")
        seen[text] = lineno
        out.append((lineno, text))
    return out


def load_images(root: str | Path, spec: str, progress: bool = False) -> list[VOCImage]:
    """Every image of ``spec`` under ``root``, annotations parsed, in spec order then list order."""
    from tqdm.auto import tqdm

    devkit = resolve_devkit(root)
    entries, owner = [], {}
    for year, name in parse_spec(spec):
        lst = list_path(devkit, year, name)
        for lineno, image in read_ids(lst):
            key = f"{year}_{image}"
            if key in owner:
                raise ValueError(f"set spec {spec!r}: image {key} is in both {owner[key]} and {year}-{name}; a "
                                 "union must not repeat an image (use 2007-trainval, not 2007-train+2007-trainval)")
            owner[key] = f"{year}-{name}"
            entries.append((year, image, lst, lineno))
    images = []
    for year, image, lst, lineno in tqdm(entries, desc=f"VOC {spec} annotations", disable=not progress, unit="xml"):
        base = devkit / f"VOC{year}"
        xml = base / "Annotations" / f"{image}.xml"
        if not xml.is_file():
            raise FileNotFoundError(f"{xml} is missing (image {image} is listed in {lst}:{lineno}); {LAYOUT}")
        images.append(parse_annotation(xml, year, base / "JPEGImages" / f"{image}.jpg"))
    return images


def split_val(images: list[VOCImage], count: int, seed: int) -> tuple[list[VOCImage], list[VOCImage]]:
    """``(train, val)``: ``val`` = the ``count`` images of smallest ``sha256(f"{seed}:{image_id}")``; order kept."""
    n = len(images)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < n:
        raise ValueError(f"val count {count!r}: expected an integer with 0 < count < {n} (the number of images)")
    ids = [im.image_id for im in images]
    if len(set(ids)) != n:
        dup = sorted(i for i, c in Counter(ids).items() if c > 1)[:3]
        raise ValueError(f"split_val: images repeat ({', '.join(dup)}); expected each image once")
    rank = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    chosen = set(rank[:count])
    return ([im for im in images if im.image_id not in chosen], [im for im in images if im.image_id in chosen])


def train_val_images(root: str | Path, spec: str, val_count: int, seed: int = 0,
                     progress: bool = False) -> tuple[list[VOCImage], list[VOCImage]]:
    """:func:`load_images` then :func:`split_val`; refuses a spec containing a test set."""
    if any(name == "test" for _, name in parse_spec(spec)):
        raise ValueError(f"set spec {spec!r} contains a test set; the val subset is drawn from trainval images "
                         "only (model selection never looks at test)")
    return split_val(load_images(root, spec, progress=progress), val_count, seed)
