"""Writing the manifest (docs/FORMAT.md): ``manifest.json`` from the per-shard records, and timm's
``_info.json``.

Reading and verifying a build is :mod:`imagenet52p.format.manifest`; the printed summary is
:mod:`imagenet52p.summary`.
"""

from __future__ import annotations

from .._version import __version__
from ..classes import ClassSet
from ..format import FORMAT_VERSION, SPLITS

EXAMPLES = 20  # ignored files listed in the manifest (all are counted)


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
