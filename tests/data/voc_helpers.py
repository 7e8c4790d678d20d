"""Shared pieces of the VOC tests (import the functions; each test module makes its own fixtures):
a synthetic VOCdevkit cached per base folder, file digests, hand-written annotations, and counts
computed from the generator's own record (independent of the XML reader under test)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from imagenet52p.voc import VOC_CLASSES
from imagenet52p.voc.fake import FakeVOC, make_fake_voc

TOOL = str(Path(sys.executable).parent / "imagenet52p")
#: The tree most tests read: 2007 trainval 20 + test 12, 2012 trainval 20 (52 images, 96-160 px).
TREE_ARGS = dict(years=("2007", "2012"), trainval=20, test=12, seed=0)
_CACHE: dict[Path, FakeVOC] = {}


def fake_tree(base: Path, **overrides) -> FakeVOC:
    """``make_fake_voc(base / "tree", **TREE_ARGS)`` once per ``base`` (call with a module's tmp folder)."""
    args = {**TREE_ARGS, **overrides}
    key = base / ("tree-" + hashlib.sha256(repr(sorted(args.items())).encode()).hexdigest()[:8])
    if key not in _CACHE:
        _CACHE[key] = make_fake_voc(key, **args)
    return _CACHE[key]


def copy_tree(fake: FakeVOC, dst: Path) -> Path:
    """A private copy of a fake tree's VOCdevkit (to damage); returns the copy's VOCdevkit."""
    shutil.copytree(fake.devkit, dst / "VOCdevkit")
    return dst / "VOCdevkit"


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected_counts(fake: FakeVOC, parts) -> tuple[int, dict]:
    """``(n_images, {class: [images, objects, difficult]})`` of the images of ``parts`` ((year, set) pairs),
    from what the generator drew."""
    keys = list(dict.fromkeys((y, i) for y, s in parts for i in fake.sets[y, s]))
    counts = {c: [0, 0, 0] for c in VOC_CLASSES}
    for key in keys:
        objs = fake.objects[key]
        for c in {o.name for o in objs if not o.difficult}:
            counts[c][0] += 1
        for o in objs:
            counts[o.name][2 if o.difficult else 1] += 1
    return len(keys), counts


def xml_text(objects=(("dog", 1, 2, 30, 40, "0"),), width=64, height=48, size=True, extra="") -> str:
    """A hand-written annotation: ``objects`` = (name, xmin, ymin, xmax, ymax, difficult or None)."""
    parts = ["<annotation><filename>x.jpg</filename>"]
    if size:
        parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for name, x0, y0, x1, y1, diff in objects:
        d = "" if diff is None else f"<difficult>{diff}</difficult>"
        parts.append(f"<object><name>{name}</name><truncated>0</truncated>{d}<bndbox><xmin>{x0}</xmin>"
                     f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + extra + "</annotation>"


def run(*args) -> subprocess.CompletedProcess:
    """The installed ``imagenet52p`` console script in a subprocess."""
    return subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True, timeout=120)
