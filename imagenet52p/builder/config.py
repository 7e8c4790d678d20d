"""Build options (:class:`BuildConfig`), the build error type, and the option checks.

Options that change the bytes of the output (see :data:`IDENTITY_OPTIONS`) form the
*identity* of a build: an output directory built with another identity is refused
unless ``overwrite=True``.  ``workers``, ``on_error``, ``allow_missing``,
``overwrite`` and ``progress`` never change a byte of the output.

Shard layout (three modes, :meth:`BuildConfig.shard_mode`): ``auto`` (the default: neither shard size
nor ``shards_per_split`` given) cuts each split into :func:`~.assign.auto_shard_count` shards of equal
sizes (to within one sample) no larger than :data:`SHARD_SIZE` / :data:`EVAL_SHARD_SIZE`; ``fixed``
(``shard_size`` and/or ``eval_shard_size`` given, the other one at its default) cuts consecutive runs
of those sizes, as every build did before automatic counts; ``count`` (``shards_per_split`` given)
cuts every split into exactly that many shards.  Giving both a size and a count is refused.
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
#: Samples per train / per val and test shard: the fixed size when only one of the two sizes is given,
#: and the upper bound of the automatic counts.
SHARD_SIZE, EVAL_SHARD_SIZE = 1000, 250
#: The default ``shard_mode``; in the identity it is recorded as ``"shard_counts": "auto"``, ``count`` as
#: ``"shards_per_split": N``, and ``fixed`` by neither (as every build before automatic counts).
AUTO = "auto"
#: The identity options that make up the shard layout.
SHARD_OPTIONS = ("shard_size", "eval_shard_size", "shards_per_split", "shard_counts")


class BuildError(RuntimeError):
    """A build could not be done as asked; the message names the file/option and the fix."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``build_dataset`` needs.

    root: the ImageNet copy (any of :data:`LAYOUTS`).  out: the output directory.
    classes: ``imagenet52p`` | ``random52`` | ``imagenet1k`` | PATH of a wnid list.
    val_per_class: train images per class held out (seeded) as the ``val`` split.
    seed: drives the held-out choice and the order of samples across shards.
    shard_size / eval_shard_size: None (automatic shard counts, unless ``shards_per_split``), or fixed
    samples per shard for train / for val and test (the one not given stays at 1000 / 250).
    shards_per_split: None, or exactly this many shards in every non-empty split (sizes equal to
    within one sample; refused for a split with fewer samples, and together with a shard size).
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
    shard_size: int | None = None
    eval_shard_size: int | None = None
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
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        n = self.shards_per_split
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"--shards-per-split must be a positive integer, got {n!r}")
        sizes = [f"--{k.replace('_', '-')}" for k in ("shard_size", "eval_shard_size")
                 if getattr(self, k) is not None]
        if n is not None and sizes:
            raise ValueError(f"--shards-per-split (a shard count) cannot be combined with {' / '.join(sizes)} "
                             f"(shard sizes): pass one or the other")
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

    def shard_mode(self) -> str:
        """``count`` (``shards_per_split`` set), ``fixed`` (a shard size set) or ``auto`` (neither)."""
        if self.shards_per_split is not None:
            return "count"
        return "fixed" if (self.shard_size, self.eval_shard_size) != (None, None) else AUTO

    def split_shard_size(self, split: str) -> int:
        """The fixed size (``fixed``) or the size bound (``auto``) of ``split``'s shards."""
        if split == "train":
            return SHARD_SIZE if self.shard_size is None else self.shard_size
        return EVAL_SHARD_SIZE if self.eval_shard_size is None else self.eval_shard_size

    def shard_count(self) -> int | str | None:
        """What :func:`~.assign.plan_split` takes as ``count``: N, ``"auto"``, or None (fixed sizes)."""
        return {"count": self.shards_per_split, "auto": AUTO, "fixed": None}[self.shard_mode()]

    def identity_options(self) -> dict:
        """The output-changing options.  ``shard_size`` / ``eval_shard_size`` are always the numbers in
        effect (1000 / 250 unless given); ``shards_per_split`` is added only when set and
        ``"shard_counts": "auto"`` only in the automatic mode, so a fixed-size build has the identity
        (and the manifest ``options``) of the builds made before either existed."""
        d = asdict(self)
        ident = {k: d[k] for k in IDENTITY_OPTIONS}
        ident["shard_size"], ident["eval_shard_size"] = self.split_shard_size("train"), self.split_shard_size("val")
        mode = self.shard_mode()
        if mode == "count":
            ident["shards_per_split"] = self.shards_per_split
        elif mode == AUTO:
            ident["shard_counts"] = AUTO
        return ident


def options_shard_mode(options: dict) -> str:
    """:meth:`BuildConfig.shard_mode` of recorded identity ``options`` (an old or a new build's)."""
    if options.get("shards_per_split") is not None:
        return "count"
    return AUTO if options.get("shard_counts") == AUTO else "fixed"


def _layout(options: dict) -> tuple[str, str]:
    """``(the shard layout of recorded options in words, what to do on the command line to get it)``."""
    mode = options_shard_mode(options)
    if mode == "count":
        flags = f"--shards-per-split {options.get('shards_per_split')}"
        return flags, f"pass {flags}"
    if mode == AUTO:
        return ("automatic shard counts",
                "leave out --shard-size, --eval-shard-size and --shards-per-split (automatic shard counts)")
    flags = f"--shard-size {options.get('shard_size')} --eval-shard-size {options.get('eval_shard_size')}"
    return f"fixed shard sizes {flags}", f"pass {flags}"


def shard_layout(options: dict) -> str:
    """How recorded ``options`` cut the splits into shards, in words (for messages)."""
    return _layout(options)[0]


def shard_resume_hint(options: dict) -> str:
    """What to do on the ``build-imagenet52p`` command line to get the shard layout of ``options``."""
    return _layout(options)[1]


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
