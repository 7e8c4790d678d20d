"""Class sets: ImageNet-52P, the random-52 control, all of ImageNet-1k, or a user's list.

Everything here reads the frozen lists shipped in ``imagenet52p/_info`` and needs
no WordNet.  (Re-deriving the lists from WordNet lives in :mod:`imagenet52p.derive`.)

Label order of every set is ascending ImageNet-1k index (= sorted wnid order =
torchvision's label order), so ``imagenet1k_indices`` is increasing and the
rows of a 1000-way classifier can be sliced in label order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

BUILTIN_SETS = ("imagenet52p", "random52", "imagenet1k")
#: Frozen file behind each built-in set name (the versioned list it resolves to).
FROZEN = {"imagenet52p": "imagenet52p-v1", "random52": "random52-v2"}
#: Every frozen list, loadable by its versioned name; superseded versions stay so old results stay
#: readable (``random52-v1`` let VOC objects such as a liner and a passenger car into the control).
FROZEN_VERSIONS = ("imagenet52p-v1", "random52-v1", "random52-v2")
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ClassInfo:
    index: int  # label in the set's own index space (0..n-1)
    wnid: str
    name: str  # first WordNet lemma, readable
    imagenet1k_index: int  # torchvision's 0..999 label
    voc_class: str | None = None
    voc_synset: str | None = None  # the anchor synset it was derived from
    depth: int | None = None  # hypernym steps from the anchor (0 = the anchor itself)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassSet:
    """An ordered list of ImageNet-1k classes with a name and a content hash."""

    name: str
    classes: tuple[ClassInfo, ...]

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def wnids(self) -> list[str]:
        return [c.wnid for c in self.classes]

    @property
    def imagenet1k_indices(self) -> list[int]:
        return [c.imagenet1k_index for c in self.classes]

    @property
    def wnid_to_idx(self) -> dict[str, int]:
        return {c.wnid: c.index for c in self.classes}

    def to_json(self) -> str:
        """Canonical JSON (what :attr:`sha256` hashes and what is frozen on disk)."""
        payload = {"name": self.name, "classes": [c.to_dict() for c in self.classes]}
        return json.dumps(payload, indent=1, sort_keys=False, ensure_ascii=False) + "\n"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> "ClassSet":
        data = json.loads(text)
        return cls(data["name"], tuple(ClassInfo(**c) for c in data["classes"]))


def _info_text(name: str) -> str:
    return resources.files("imagenet52p").joinpath("_info", name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in sorted order; position = torchvision label."""
    wnids = tuple(_info_text("imagenet1k_wnids.txt").split())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):  # guards a corrupted install
        raise RuntimeError("imagenet52p/_info/imagenet1k_wnids.txt is damaged: reinstall imagenet52p")
    return wnids


@functools.lru_cache(maxsize=None)
def imagenet1k_names() -> dict[str, str]:
    """wnid -> readable name (first WordNet 3.0 lemma), frozen in ``imagenet1k_classes.tsv``."""
    names = {}
    for line in _info_text("imagenet1k_classes.tsv").splitlines()[1:]:
        wnid, _index, name = line.split("\t")
        names[wnid] = name
    return names


@functools.lru_cache(maxsize=None)
def imagenet1k_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet1k_wnids())}


def imagenet1k_set() -> ClassSet:
    names = imagenet1k_names()
    return ClassSet("imagenet1k", tuple(ClassInfo(i, w, names[w], i) for i, w in enumerate(imagenet1k_wnids())))


def frozen_set(frozen_name: str) -> ClassSet:
    """A frozen list by its versioned name, e.g. ``imagenet52p-v1``."""
    if frozen_name not in FROZEN_VERSIONS:
        raise ValueError(f"no frozen class list {frozen_name!r}; available: " + ", ".join(FROZEN_VERSIONS))
    return ClassSet.from_json(_info_text(f"{frozen_name}.json"))


def parse_wnid_list(path: str | os.PathLike) -> list[str]:
    """Read a user's wnid list: one wnid per line (first column), ``#`` comments allowed.

    Raises ValueError naming every malformed, unknown or duplicate wnid.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist (expected a text file with one wnid per line, "
                                f"or one of: {', '.join(BUILTIN_SETS)})")
    wnids, problems, seen = [], [], {}
    known = imagenet1k_index()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:  # a read error names no file by itself
        raise OSError(exc.errno, f"cannot read class list: {exc.strerror}", str(path)) from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise ValueError(f"class list {path} is not UTF-8 text (byte {exc.start} is {bad!r}); it must be "
                         "UTF-8 text with one wnid per line (e.g. n01440764), # comments allowed") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        wnid = line.split()[0].split(",")[0]
        if not _WNID.match(wnid):
            problems.append(f"line {lineno}: {wnid!r} is not a wnid (expected n + 8 digits, e.g. n02084071)")
        elif wnid not in known:
            problems.append(f"line {lineno}: {wnid} is not an ImageNet-1k class")
        elif wnid in seen:
            problems.append(f"line {lineno}: {wnid} duplicates line {seen[wnid]}")
        else:
            seen[wnid] = lineno
            wnids.append(wnid)
    if problems:
        raise ValueError(f"invalid class list {path}:\n  " + "\n  ".join(problems))
    if not wnids:
        raise ValueError(f"class list {path} names no wnids")
    return wnids


def set_from_wnids(name: str, wnids: list[str]) -> ClassSet:
    """A set of plain ImageNet-1k classes, in ImageNet-1k label order."""
    idx, names = imagenet1k_index(), imagenet1k_names()
    ordered = sorted(wnids, key=idx.__getitem__)
    return ClassSet(name, tuple(ClassInfo(i, w, names[w], idx[w]) for i, w in enumerate(ordered)))


def load_class_set(spec: str | os.PathLike) -> ClassSet:
    """``imagenet52p`` | ``random52`` | ``imagenet1k`` | a frozen name such as ``random52-v1`` | PATH.

    ``random52`` is ``random52-v2``; ``random52-v1`` still loads by its frozen name.
    """
    spec_s = str(spec)
    if spec_s == "imagenet1k":
        return imagenet1k_set()
    if spec_s in FROZEN:
        return frozen_set(FROZEN[spec_s])
    if spec_s in FROZEN_VERSIONS:
        return frozen_set(spec_s)
    path = Path(spec_s)
    if path.exists() or os.sep in spec_s or path.suffix:
        return set_from_wnids(path.stem, parse_wnid_list(path))
    raise ValueError(f"unknown class set {spec_s!r}: use one of {', '.join(BUILTIN_SETS)}, "
                     f"{', '.join(FROZEN_VERSIONS)}, or the path of a file with one wnid per line")
