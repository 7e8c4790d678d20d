"""Build options (:class:`BuildConfig`), the build error type, and the option checks.

Options that change the bytes of the output (see :data:`IDENTITY_OPTIONS`) form the
*identity* of a build: an output directory built with another identity is refused
unless ``overwrite=True``.  ``workers``, ``on_error``, ``allow_missing``,
``overwrite`` and ``progress`` never change a byte of the output.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .._version import __version__
from ..format import FORMAT_VERSION, SPLITS  # noqa: F401 (SPLITS: re-exported to the builder)

LAYOUTS = ("auto", "folders", "kaggle", "devkit", "archives")
ON_ERROR = ("skip", "fail")
#: Options whose value changes the output bytes (recorded in the manifest as ``options``).
IDENTITY_OPTIONS = ("val_per_class", "seed", "shard_size", "eval_shard_size", "resize", "quality",
                    "decode_check")


class BuildError(RuntimeError):
    """A build could not be done as asked; the message names the file/option and the fix."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``build_dataset`` needs.

    root: the ImageNet copy (any of :data:`LAYOUTS`).  out: the output directory.
    classes: ``imagenet52p`` | ``random52`` | ``imagenet1k`` | PATH of a wnid list.
    val_per_class: train images per class held out (seeded) as the ``val`` split.
    seed: drives the held-out choice and the order of samples across shards.
    shard_size / eval_shard_size: samples per shard for train / for val and test.
    shards_per_split: None, or exactly this many shards in every non-empty split (sizes equal to
    within one sample, overriding shard_size / eval_shard_size; refused for a split with fewer samples).
    resize: cap the shorter side at this many pixels (re-encoding with ``quality``); None keeps sizes.
    quality: JPEG quality of every re-encoded image (conversions and resizes).
    decode_check: fully decode every kept JPEG (slower) instead of the header + end-marker check.
    workers: processes (None = all usable cores).  on_error: ``skip`` bad images (listed) or ``fail``.
    allow_missing: build even if chosen classes have no train images.  overwrite: replace what is in ``out``.
    """

    root: str | os.PathLike
    out: str | os.PathLike
    classes: str = "imagenet52p"
    layout: str = "auto"
    val_per_class: int = 50
    seed: int = 0
    shard_size: int = 1000
    eval_shard_size: int = 250
    shards_per_split: int | None = None
    resize: int | None = None
    quality: int = 90
    decode_check: bool = False
    workers: int | None = None
    on_error: str = "skip"
    allow_missing: bool = False
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> "BuildConfig":
        """Raise ValueError naming the bad option and the allowed values; return self."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout {self.layout!r} is not one of: {', '.join(LAYOUTS)}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"--on-error {self.on_error!r} is not one of: {', '.join(ON_ERROR)}")
        for name in ("shard_size", "eval_shard_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        n = self.shards_per_split
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"--shards-per-split must be a positive integer, got {n!r}")
        if not isinstance(self.val_per_class, int) or self.val_per_class < 0:
            raise ValueError(f"--val-per-class must be an integer >= 0, got {self.val_per_class!r}")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < 8):
            raise ValueError(f"--resize must be an integer >= 8 (pixels of the shorter side), got {self.resize!r}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be in 1..100, got {self.quality!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ValueError(f"--workers must be a positive integer, got {self.workers!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"--seed must be an integer, got {self.seed!r}")
        return self

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    @property
    def out_path(self) -> Path:
        return Path(self.out).expanduser()

    def num_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)

    def identity_options(self) -> dict:
        """The output-changing options; ``shards_per_split`` only when set (so builds made without
        it keep the identity, and the manifest ``options``, they had before the option existed)."""
        d = asdict(self)
        ident = {k: d[k] for k in IDENTITY_OPTIONS}
        if self.shards_per_split is not None:
            ident["shards_per_split"] = self.shards_per_split
        return ident


def build_identity(cfg: BuildConfig, class_set_sha256: str, layout: str) -> dict:
    """What makes two builds the same build (compared on resume)."""
    return {"format": FORMAT_VERSION, "tool_version": __version__, "class_set_sha256": class_set_sha256,
            "layout": layout, "options": cfg.identity_options()}


def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def derived_seed(*parts) -> int:
    """A 64-bit seed from ``parts`` (stable across Python runs, unlike ``hash``)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")
