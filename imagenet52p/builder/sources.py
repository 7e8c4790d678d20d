"""Source records shared by the layout readers, and reading one source's bytes.

A :class:`Source` is either a plain file or a byte range inside an uncompressed tar archive
(the official ``ILSVRC2012_img_*.tar``); :func:`read_source` reads either with one ``pread``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

UNREADABLE = "cannot read"  # how a skip-list reason starts when the source file could not be read
IMAGE_EXTS = frozenset({".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class Source(NamedTuple):
    """One source image.  ``offset`` is -1 for a plain file at ``path``; otherwise the image is
    ``size`` bytes at ``offset`` inside the (uncompressed) archive ``path``."""

    split: str  # source split: "train" or "val" (ImageNet's validation set)
    wnid: str
    rel: str  # path relative to ROOT ("ARCHIVE.tar/inner.tar/member" inside archives)
    size: int
    path: str
    offset: int = -1


@dataclass
class Scan:
    """What a layout reader found for the chosen classes."""

    layout: str
    sources: list[Source] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # "rel (why)"
    skipped: list[dict] = field(default_factory=list)  # {"source", "split", "reason"} (output split names)
    notes: dict[str, str] = field(default_factory=dict)  # source split -> why it has no images
    train_wnids: set[str] = field(default_factory=set)  # chosen wnids that have a train folder/tar


def is_image_name(name: str) -> bool:
    """An image file name: an image extension (any case) and not a dot-file (``._x.JPEG`` is macOS junk)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS


_ARCHIVE_FDS: dict[str, int] = {}  # per-process cache of open archives


def read_source(src: Source) -> bytes:
    """The bytes of ``src`` (raises OSError naming the file when it cannot be read fully)."""
    if src.offset < 0:
        with open(src.path, "rb") as f:
            return f.read()
    fd = _ARCHIVE_FDS.get(src.path)
    if fd is None:
        fd = _ARCHIVE_FDS[src.path] = os.open(src.path, os.O_RDONLY)
    data = os.pread(fd, src.size, src.offset)
    if len(data) != src.size:
        raise OSError(f"{src.path}: archive ended after {len(data)} of {src.size} bytes of {src.rel}")
    return data
