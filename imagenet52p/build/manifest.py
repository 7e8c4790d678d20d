"""``manifest.json``, ``_info.json``, ``classes.json`` (see docs/FORMAT.md), verification and summaries.

:func:`verify_build` re-reads every shard once: its sha256 and size against the manifest, and its
tar members (every sample has ``.jpg``, ``.cls`` and ``.json``; number of samples as recorded).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

from .._version import __version__
from ..classes import ClassSet
from .config import FORMAT_VERSION, SPLITS

EXAMPLES = 20  # ignored files listed in the manifest (all are counted)


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _split_order(entry: dict) -> tuple:
    return (SPLITS.index(entry["split"]) if entry["split"] in SPLITS else 9, entry["source"])


def make_manifest(cs: ClassSet, layout: str, options: dict, records: dict[str, list[dict]],
                  notes: dict[str, str], scan_skipped: list[dict], ignored: list[str],
                  missing: list[str]) -> dict:
    """The manifest from the per-shard records of each split (in shard order)."""
    splits, skipped, converted = {}, list(scan_skipped), []
    for split in SPLITS:
        recs = records.get(split, [])
        per_class = {w: 0 for w in cs.wnids}
        for r in recs:
            for w, n in r["per_class"].items():
                per_class[w] += n
            skipped.extend(r["skipped"])
            converted.extend(r["converted"])
        entry = {"num_samples": sum(r["num_samples"] for r in recs),
                 "shards": [{k: r[k] for k in ("path", "num_samples", "bytes", "sha256")} for r in recs],
                 "per_class": per_class}
        if not recs:
            entry["note"] = notes.get(split, "no images")
        splits[split] = entry
    ignored = sorted(ignored)
    return {
        "format": FORMAT_VERSION, "tool": "imagenet52p", "tool_version": __version__,
        "class_set": {"name": cs.name, "sha256": cs.sha256, "num_classes": len(cs)},
        "layout": layout, "options": options, "splits": splits,
        "missing_classes": missing,
        "skipped": sorted(skipped, key=_split_order),
        "converted": sorted(converted, key=_split_order),
        "ignored": {"count": len(ignored), "examples": ignored[:EXAMPLES]},
    }


def make_info(manifest: dict, prefix: str) -> dict:
    """timm ``ReaderWds`` metadata: explicit shard file lists (timm does not brace-expand them)."""
    splits = {}
    for name, s in manifest["splits"].items():
        if s["shards"]:
            splits[name] = {"name": name, "num_samples": s["num_samples"],
                            "filenames": [sh["path"] for sh in s["shards"]],
                            "shard_lengths": [sh["num_samples"] for sh in s["shards"]]}
    return {"name": prefix, "num_classes": manifest["class_set"]["num_classes"], "splits": splits}


BUILD_HINT = "build it with `build-imagenet52p --root IMAGENET --out DIR`"


def load_manifest(out: str | os.PathLike) -> dict:
    """``out/manifest.json`` of a finished build, checked for presence and format version (the one
    loader of the CLIs and the dataset).  Raises FileNotFoundError (no directory, no manifest:
    the message says whether an unfinished build is there to resume) or ValueError (not JSON,
    another format version)."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} does not exist or is not a directory; {BUILD_HINT}")
    path = out / "manifest.json"
    if not path.is_file():
        if any((out / s).is_dir() for s in SPLITS):
            raise FileNotFoundError(f"{path} not found: {out} holds no complete build (shard folders exist: the "
                                    "build did not finish; rerun the same build-imagenet52p command to resume it)")
        raise FileNotFoundError(f"{path} does not exist: {out} holds no build; {BUILD_HINT}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the build is damaged: rebuild it with --overwrite") \
            from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has format {manifest.get('format')!r}; this imagenet52p reads format "
                         f"{FORMAT_VERSION}: upgrade imagenet52p or rebuild the dataset")
    return manifest


class _HashingReader:
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, size=-1):
        data = self.f.read(size)
        self.h.update(data)
        self.n += len(data)
        return data


def check_shard(out: str, shard: dict) -> list[str]:
    """Problems with one shard (empty list = it matches its manifest entry)."""
    path = Path(out) / shard["path"]
    if not path.is_file():
        return [f"{shard['path']}: missing"]
    problems, samples = [], {}
    with open(path, "rb") as f:
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
    when ``out`` holds no manifest."""
    manifest = load_manifest(out)
    out = str(out)
    shards = [sh for s in manifest["splits"].values() for sh in s["shards"]]
    problems = []
    for name, s in manifest["splits"].items():
        if sum(sh["num_samples"] for sh in s["shards"]) != s["num_samples"]:
            problems.append(f"manifest.json: split {name}: shard counts do not add up to num_samples")
    jobs = [(out, sh) for sh in shards]
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
    if not classes.is_file() or hashlib.sha256(classes.read_bytes()).hexdigest() != manifest["class_set"]["sha256"]:
        problems.append("classes.json: missing or does not match the manifest's class-set sha256")
    return problems


def format_summary(manifest: dict, timings: dict[str, float] | None = None,
                   reused: dict[str, int] | None = None) -> str:
    """The per-split table (images, shards, GB, skipped, converted[, reused, wall time])."""
    skipped = {s: 0 for s in SPLITS}
    converted = {s: 0 for s in SPLITS}
    for e in manifest["skipped"]:
        skipped[e["split"]] = skipped.get(e["split"], 0) + 1
    for e in manifest["converted"]:
        converted[e["split"]] = converted.get(e["split"], 0) + 1
    cols = ["split", "images", "shards", "GB", "skipped", "converted"]
    if timings is not None:
        cols += ["reused", "wall s"]
    rows = []
    for name, s in manifest["splits"].items():
        gb = sum(sh["bytes"] for sh in s["shards"]) / 1e9
        row = [name, str(s["num_samples"]), str(len(s["shards"])), f"{gb:.3f}", str(skipped.get(name, 0)),
               str(converted.get(name, 0))]
        if timings is not None:
            row += [str((reused or {}).get(name, 0)), f"{timings.get(name, 0.0):.1f}"]
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    cs = manifest["class_set"]
    lines = [f"{cs['name']} ({cs['num_classes']} classes, sha256 {cs['sha256'][:12]}), layout {manifest['layout']}, "
             f"options {json.dumps(manifest['options'], sort_keys=True)}",
             fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for name, s in manifest["splits"].items():
        if "note" in s:
            lines.append(f"note: {name}: {s['note']}")
    if manifest.get("missing_classes"):
        lines.append(f"missing classes (--allow-missing): {', '.join(manifest['missing_classes'])}")
    lines.append(f"ignored files/folders: {manifest['ignored']['count']}")
    return "\n".join(lines)
