"""The printed summary of a build (``build-imagenet52p``, ``imagenet52p info``): one table row per split."""

from __future__ import annotations

import json

from .format import SPLITS


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
