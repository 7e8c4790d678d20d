"""The shape of ``manifest.json`` and where its shard paths may point (docs/FORMAT.md).

:func:`check_manifest_shape` is called by :func:`imagenet52p.format.load_manifest`, so every reader
(``imagenet52p verify``, ``imagenet52p info``, the dataset, the benchmark) refuses a manifest that
is valid JSON of the wrong shape with one :class:`ManifestError` naming the file and the key
(``splits.train.shards[3].sha256``).  :func:`resolve_shard` is the one way a reader turns a shard's
``path`` into a file: the result, symlinks resolved, must lie inside the build folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

FIX = "the build is damaged or was edited: copy the whole build folder again, or rebuild it with build-imagenet52p"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """``manifest.json`` has the wrong shape or points outside its build; names the file and the key."""


def _kind(value) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                                         int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _want(path: Path, key: str, value, kind: type, what: str) -> None:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if ok and kind is int and value < 0:
        ok = False
    if not ok:
        raise ManifestError(f"{path}: {key} must be {what}, found {_kind(value)} ({str(value)[:40]!r}); {FIX}")


def _get(path: Path, obj: dict, key: str, name: str, kind: type, what: str):
    if name not in obj:
        raise ManifestError(f"{path}: {key}.{name} is missing; {FIX}" if key else f"{path}: key {name!r} is missing; "
                            f"{FIX}")
    value = obj[name]
    _want(path, f"{key}.{name}" if key else name, value, kind, what)
    return value


def _check_shard_entry(path: Path, key: str, shard) -> None:
    _want(path, key, shard, dict, "an object with path, num_samples, bytes and sha256")
    p = _get(path, shard, key, "path", str, "a path relative to the build folder")
    if not p:
        raise ManifestError(f"{path}: {key}.path is empty; {FIX}")
    _get(path, shard, key, "num_samples", int, "an integer >= 0")
    _get(path, shard, key, "bytes", int, "an integer >= 0")
    sha = _get(path, shard, key, "sha256", str, "64 lowercase hex digits")
    if not _SHA256.match(sha):
        raise ManifestError(f"{path}: {key}.sha256 must be 64 lowercase hex digits, found {sha[:70]!r}; {FIX}")


def _check_entries(path: Path, key: str, entries) -> None:
    _want(path, key, entries, list, "a list of {split, source, reason}")
    for i, e in enumerate(entries):
        _want(path, f"{key}[{i}]", e, dict, "an object with split, source and reason")
        for name in ("split", "source", "reason"):
            _get(path, e, f"{key}[{i}]", name, str, "a string")


def check_manifest_shape(manifest, path: Path) -> None:
    """Raise :class:`ManifestError` naming ``path`` and the first key that is missing or of the wrong type."""
    _want(path, "the top level", manifest, dict, "an object (a build's manifest)")
    splits = _get(path, manifest, "", "splits", dict, "an object of splits (train, val, test)")
    for name, split in splits.items():
        key = f"splits.{name}"
        _want(path, key, split, dict, "an object with num_samples and shards")
        _get(path, split, key, "num_samples", int, "an integer >= 0")
        shards = _get(path, split, key, "shards", list, "a list of shard entries")
        for i, shard in enumerate(shards):
            _check_shard_entry(path, f"{key}.shards[{i}]", shard)
        if "per_class" in split:
            _want(path, f"{key}.per_class", split["per_class"], dict, "an object of wnid -> count")
    cs = _get(path, manifest, "", "class_set", dict, "an object with name, sha256 and num_classes")
    _get(path, cs, "class_set", "name", str, "a string")
    _get(path, cs, "class_set", "sha256", str, "a hex sha256")
    _get(path, cs, "class_set", "num_classes", int, "an integer >= 0")
    _get(path, manifest, "", "layout", str, "a string")
    _get(path, manifest, "", "options", dict, "an object")
    for name in ("skipped", "converted"):
        _check_entries(path, name, manifest.get(name, []))
    _get(path, _get(path, manifest, "", "ignored", dict, "an object with count"), "ignored", "count", int,
         "an integer >= 0")
    if "missing_classes" in manifest:
        _want(path, "missing_classes", manifest["missing_classes"], list, "a list of wnids")


def resolve_shard(root: str | os.PathLike, rel: str, where: str) -> Path:
    """The file of the shard whose manifest ``path`` is ``rel`` (entry ``where``, e.g.
    ``splits.train.shards[3]``), resolved with symlinks; ManifestError unless it lies inside ``root``."""
    root = Path(root)
    manifest = root / "manifest.json"
    if os.path.isabs(rel):
        raise ManifestError(f"{manifest}: {where}.path {rel!r} is an absolute path; a shard path is relative to the "
                            f"build folder and stays inside it; {FIX}")
    base = root.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise ManifestError(f"{manifest}: {where}.path {rel!r} resolves to {target}, outside the build folder {base} "
                            f"(a '..' or a symlink leaving the build); a build reads only its own files; {FIX}")
    return target
