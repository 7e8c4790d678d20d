"""Check a VOCdevkit: per-class counts per set, and every missing or malformed file.

Counts, as the devkit's statistics tables: ``images`` = images with at least one non-difficult
object of the class, ``objects`` = non-difficult objects, ``difficult`` = difficult objects (counted
apart).  The ``total`` column counts each image once over all the sets checked.

Problems, all collected (never stopping at the first): an id in a list file that is not a plain name,
repeated in its file or in two parts of a union; an id without annotation (``Annotations/<id>.xml``
missing); an XML that :func:`~imagenet52p.voc.annotations.parse_annotation` refuses (not XML, no
size or bndbox, unknown class, inverted box, box outside the image); a missing JPEG; a JPEG that PIL
cannot open and ``verify()`` (or, with ``decode=True``, fully decode); a JPEG whose size differs from
its XML's.  Each names the file.  A missing root, year folder, Annotations/, JPEGImages/ or list file
is not a problem but a ``FileNotFoundError`` (the tree is not a VOCdevkit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .annotations import VOC_CLASSES, VOCImage, parse_annotation
from .sets import check_image_id, list_lines, list_path, parse_spec, resolve_devkit, spec_name


@dataclass
class SetCounts:
    """Per-class ``[images, objects, difficult]`` of one set (or the total) and its number of images."""
    n_images: int = 0
    classes: dict = field(default_factory=lambda: {c: [0, 0, 0] for c in VOC_CLASSES})

    def add(self, image: VOCImage | None) -> None:
        self.n_images += 1
        if image is None:
            return
        for c in {o.name for o in image.objects if not o.difficult}:
            self.classes[c][0] += 1
        for o in image.objects:
            self.classes[o.name][2 if o.difficult else 1] += 1


@dataclass
class VOCReport:
    """``sets`` keyed by canonical spec, ``total`` over the union of their images, ``problems`` (one line each)."""
    devkit: Path
    sets: dict
    total: SetCounts
    problems: list

    @property
    def ok(self) -> bool:
        return not self.problems


def _list_entries(devkit: Path, spec: str, problems: dict) -> list:
    """``(year, id, list file, line)`` of a spec's valid, unrepeated ids; the rest become problems."""
    entries, owner = [], {}
    for year, name in parse_spec(spec):
        lst, seen = list_path(devkit, year, name), {}
        for lineno, text in list_lines(lst):
            try:
                check_image_id(text, lst, lineno)
            except ValueError as exc:
                problems[str(exc)] = None
                continue
            if text in seen:
                problems[f"{lst}: image id {text!r} on lines {seen[text]} and {lineno}; expected each id once"] = None
                continue
            seen[text] = lineno
            if (year, text) in owner:
                problems[f"{lst}:{lineno}: image {year}_{text} is also in {owner[year, text]} (set spec {spec}); "
                         "a union must not repeat an image"] = None
                continue
            owner[year, text] = f"{year}-{name}"
            entries.append((year, text, lst, lineno))
    return entries


def _check_jpeg(jpg: Path, decode: bool) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` or ``(None, problem)``."""
    from PIL import Image

    try:
        with Image.open(jpg) as im:
            size = im.size
            im.verify()
        if decode:
            with Image.open(jpg) as im:
                im.load()
    except Exception as exc:  # noqa: BLE001 (PIL raises many types on corrupt data; each is a problem here)
        return None, f"{jpg}: JPEG unreadable by PIL ({type(exc).__name__}: {exc})"
    return size, None


def check_image(devkit: Path, year: str, image: str, where: str, decode: bool = False):
    """``(VOCImage or None, [problems])`` of one listed image (``where`` = ``list file:line``)."""
    base = devkit / f"VOC{year}"
    xml, jpg = base / "Annotations" / f"{image}.xml", base / "JPEGImages" / f"{image}.jpg"
    problems, parsed = [], None
    if not xml.is_file():
        problems.append(f"{xml}: annotation missing (image {image} is listed in {where})")
    else:
        try:
            parsed = parse_annotation(xml, year, jpg)
        except ValueError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{xml}: unreadable ({exc.strerror or exc})")
    if not jpg.is_file():
        problems.append(f"{jpg}: JPEG missing (image {image} is listed in {where})")
        return parsed, problems
    size, problem = _check_jpeg(jpg, decode)
    if problem:
        problems.append(problem)
    elif parsed is not None and size != (parsed.width, parsed.height):
        problems.append(f"{jpg}: JPEG is {size[0]}x{size[1]} but {xml} says {parsed.width}x{parsed.height}")
    return parsed, problems


def verify_voc(root, specs=("2007-trainval", "2007-test"), decode: bool = False, progress: bool = False) -> VOCReport:
    """Count and check every image of each set spec in ``specs`` (a spec string or a sequence of them)."""
    from tqdm.auto import tqdm

    devkit = resolve_devkit(root)
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise ValueError("verify_voc: no set spec given; expected e.g. 2007-trainval,2007-test")
    canonical = [spec_name(parse_spec(s)) for s in specs]
    problems: dict[str, None] = {}  # ordered and without repeats (a list file shared by two specs)
    entries = {c: _list_entries(devkit, c, problems) for c in dict.fromkeys(canonical)}
    first = {}
    for rows in entries.values():
        for year, image, lst, lineno in rows:
            first.setdefault((year, image), f"{lst}:{lineno}")
    parsed = {}
    for (year, image), where in tqdm(first.items(), desc="VOC verify", unit="img", disable=not progress):
        parsed[year, image], found = check_image(devkit, year, image, where, decode)
        problems.update(dict.fromkeys(found))
    sets, total = {}, SetCounts()
    for c, rows in entries.items():
        sets[c] = SetCounts()
        for year, image, _, _ in rows:
            sets[c].add(parsed[year, image])
    for key in first:
        total.add(parsed[key])
    return VOCReport(devkit=devkit, sets=sets, total=total, problems=list(problems))


def format_report(report: VOCReport) -> str:
    """The per-class table: ``images / objects / difficult`` per set, then the total."""
    cols = list(report.sets.items()) + [("total", report.total)]
    cells = [[f"{c[0]}/{c[1]}/{c[2]}" for c in (counts.classes[name] for _, counts in cols)] for name in VOC_CLASSES]
    rows = [[name, *r] for name, r in zip(VOC_CLASSES, cells)]
    rows.append(["images", *(str(counts.n_images) for _, counts in cols)])
    head = ["class", *(name for name, _ in cols)]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    fmt = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [f"{report.devkit}: images/objects/difficult per class (images, objects: non-difficult only)",
             fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    return "\n".join(lines)
