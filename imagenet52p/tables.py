"""A class set as text: the readable table (:func:`format_table`) and TSV (:func:`format_tsv`), as
``imagenet52p classes`` prints them."""

from __future__ import annotations

from collections import defaultdict

from .classes import ClassSet


def format_table(cs: ClassSet) -> str:
    """Readable table; grouped by VOC class when the set has them."""
    lines = [f"{cs.name}: {len(cs)} classes (sha256 {cs.sha256[:12]})"]
    if any(c.voc_class for c in cs):
        groups = defaultdict(list)
        for c in cs:
            groups[c.voc_class].append(c)
        for voc in sorted(groups, key=lambda v: (v is None, v or "")):
            members = groups[voc]
            lines.append(f"\n{voc or '(none)'} ({len(members)})")
            for c in members:
                lines.append(f"  {c.index:>3}  {c.wnid}  {c.name:<26} in1k={c.imagenet1k_index:<4} "
                             f"depth={c.depth} via {c.voc_synset}")
    else:
        lines.append("")
        lines.extend(f"  {c.index:>4}  {c.wnid}  {c.name:<30} in1k={c.imagenet1k_index}" for c in cs)
    return "\n".join(lines)


def format_tsv(cs: ClassSet) -> str:
    cols = ["index", "wnid", "name", "voc_class", "voc_synset", "depth", "imagenet1k_index"]
    rows = ["\t".join(cols)]
    for c in cs:
        d = c.to_dict()
        rows.append("\t".join("" if d[k] is None else str(d[k]) for k in cols))
    return "\n".join(rows)
