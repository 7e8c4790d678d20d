"""Reading and verifying a build (docs/FORMAT.md): the format version, the split names, the one
loader of ``manifest.json`` and :func:`verify_build`.

:func:`verify_build` re-reads every shard once: its sha256 and size against the manifest, and its
tar members (every sample has ``.jpg``, ``.cls`` and ``.json``; number of samples as recorded).
The writing side (making the manifest from the shard records) is :mod:`imagenet52p.builder.manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

from .files import file_sha256
from .schema import check_manifest_shape, resolve_shard

FORMAT_VERSION = 1  # the manifest's "format"; a reader refuses any other
SPLITS = ("train", "val", "test")  # the manifest's splits, in this order
BUILD_HINT = "build it with `build-imagenet52p --root IMAGENET --out DIR`"
_RAW_MARKERS = ("ILSVRC2012_img_train.tar", "ILSVRC")  # an ImageNet copy (archives, kaggle)


def _looks_raw(out: Path) -> bool:
    """An ImageNet copy (``train/<wnid>/``, the official archives, kaggle's tree), not a build."""
    if any((out / m).exists() for m in _RAW_MARKERS):
        return True
    try:
        return any(p.is_dir() for p in (out / "train").iterdir())
    except OSError:  # no train/ folder, or an unreadable one
        return False


def _no_manifest(out: Path, path: Path) -> FileNotFoundError:
    if (out / ".build").is_dir() or (any((out / s).is_dir() for s in SPLITS) and not _looks_raw(out)):
        return FileNotFoundError(f"{path} not found: {out} holds no complete build (shard folders exist: the "
                                 "build did not finish; rerun the same build-imagenet52p command to resume it)")
    if _looks_raw(out):
        return FileNotFoundError(f"{out} is not a build (no manifest.json) but looks like an ImageNet copy "
                                 f"(train/<wnid>/ folders or the ILSVRC2012 archives): make a build from it with "
                                 f"`build-imagenet52p --root {out} --out DIR`, then read DIR")
    return FileNotFoundError(f"{path} does not exist: {out} holds no build; {BUILD_HINT}")


def load_manifest(out: str | os.PathLike) -> dict:
    """``out/manifest.json`` of a finished build, checked for presence and format version (the one
    loader of the CLIs and the dataset).  Raises FileNotFoundError (no directory, no manifest:
    the message says whether an unfinished build is there to resume) or ValueError (not JSON,
    another format version; :class:`ManifestError`, a ValueError, for the wrong shape, naming the key)."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} does not exist or is not a directory; {BUILD_HINT}")
    path = out / "manifest.json"
    if not path.is_file():
        raise _no_manifest(out, path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:  # a read error names no file by itself
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the build is damaged: rebuild it with --overwrite") \
            from None
    if isinstance(manifest, dict) and manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has format {manifest.get('format')!r}; this imagenet52p reads format "
                         f"{FORMAT_VERSION}: upgrade imagenet52p or rebuild the dataset")
    check_manifest_shape(manifest, path)
    return manifest


class _HashingReader:
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, size=-1):
        data = self.f.read(size)
        self.h.update(data)
        self.n += len(data)
        return data


def check_shard(out: str, shard: dict, where: str = "shard") -> list[str]:
    """Problems with one shard (empty list = it matches its manifest entry ``where``).  Raises
    ManifestError when its path leaves the build (:func:`resolve_shard`)."""
    path = resolve_shard(out, shard["path"], where)
    if not path.is_file():
        return [f"{shard['path']}: missing"]
    problems, samples = [], {}
    try:
        f = open(path, "rb")
    except OSError as exc:
        return [f"{shard['path']}: cannot read ({exc.strerror})"]
    with f:
        reader = _HashingReader(f)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                for m in tf:
                    key, _, ext = m.name.partition(".")
                    samples.setdefault(key, set()).add(ext)
        except (tarfile.TarError, EOFError, OSError) as exc:
            problems.append(f"{shard['path']}: not a readable tar ({exc})")
        while reader.read(1 << 20):
            pass
    if reader.n != shard["bytes"]:
        problems.append(f"{shard['path']}: {reader.n} bytes, manifest says {shard['bytes']}")
    if reader.h.hexdigest() != shard["sha256"]:
        problems.append(f"{shard['path']}: sha256 mismatch (file {reader.h.hexdigest()[:12]}..., "
                        f"manifest {shard['sha256'][:12]}...)")
    if not problems:
        if len(samples) != shard["num_samples"]:
            problems.append(f"{shard['path']}: {len(samples)} samples, manifest says {shard['num_samples']}")
        incomplete = sorted(k for k, exts in samples.items() if exts != {"jpg", "cls", "json"})
        if incomplete:
            problems.append(f"{shard['path']}: samples without jpg/cls/json: {incomplete[:3]}")
    return problems


def _check_shard_args(args):
    return check_shard(*args)


def verify_build(out: str | os.PathLike, workers: int = 1) -> list[str]:
    """Every problem found (empty = the build matches its manifest).  Raises FileNotFoundError
    when ``out`` holds no manifest, ManifestError when it has the wrong shape or a shard path leaves the build."""
    manifest = load_manifest(out)
    out = str(out)
    entries = [(f"splits.{n}.shards[{i}]", sh) for n, s in manifest["splits"].items()
               for i, sh in enumerate(s["shards"])]
    for where, sh in entries:  # every path is checked before any file is opened
        resolve_shard(out, sh["path"], where)
    shards = [sh for _, sh in entries]
    problems = []
    for name, s in manifest["splits"].items():
        if sum(sh["num_samples"] for sh in s["shards"]) != s["num_samples"]:
            problems.append(f"manifest.json: split {name}: shard counts do not add up to num_samples")
    jobs = [(out, sh, where) for where, sh in entries]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = pool.map(_check_shard_args, jobs, chunksize=1)
    else:
        results = [_check_shard_args(j) for j in jobs]
    for r in results:
        problems.extend(r)
    listed = {sh["path"] for sh in shards}
    for split in SPLITS:
        d = Path(out) / split
        if d.is_dir():
            problems.extend(f"{split}/{p.name}: shard not in the manifest" for p in sorted(d.glob("*.tar"))
                            if f"{split}/{p.name}" not in listed)
    classes = Path(out) / "classes.json"
    if not classes.is_file() or file_sha256(classes) != manifest["class_set"]["sha256"]:
        problems.append("classes.json: missing or does not match the manifest's class-set sha256")
    return problems
