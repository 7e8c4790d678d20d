#!/usr/bin/env python
"""Maintainers only: re-derive the class lists from WordNet 3.0 and write them into imagenet52p/_info.

Run after editing a spec (which should then get a new version name).  Users never need this:
the frozen files are package data, and `imagenet52p classes --derive` checks them.

Writes imagenet52p-v1, the superseded random52-v1 (re-derived by its own rule, so its files come
out byte-identical) and random52-v2 (the control `random52` resolves to).
"""
import sys
from pathlib import Path

from imagenet52p.derive import (derive_class_set, derive_control, derive_imagenet1k_names, derive_random52,
                                imagenet1k_names_tsv, load_spec)

INFO = Path(__file__).resolve().parent.parent / "imagenet52p" / "_info"


def main() -> int:
    # names first: the class sets read them from the frozen tsv
    (INFO / "imagenet1k_classes.tsv").write_text(imagenet1k_names_tsv(derive_imagenet1k_names()))
    from imagenet52p import classes
    classes.imagenet1k_names.cache_clear()
    spec = load_spec()
    subset = derive_class_set(spec)
    for cs in (subset, derive_random52(spec, subset=subset), derive_control(subset=subset)):
        (INFO / f"{cs.name}.json").write_text(cs.to_json())
        (INFO / f"{cs.name}_synsets.txt").write_text("".join(w + "\n" for w in cs.wnids))
        print(f"wrote {cs.name}: {len(cs)} classes, sha256 {cs.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
