#!/usr/bin/env python
"""`make demo`: the pipeline on a built-in default (synthetic ImageNet unless --root is given)."""
import argparse
import sys
import time
from pathlib import Path

from imagenet52p.classes import load_class_set
from imagenet52p.cli import format_table
from imagenet52p.fake import FakeSpec, make_fake_imagenet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--root", default=None, help="a real ImageNet copy (default: generate a synthetic one)")
    a = p.parse_args(argv)
    out = Path(a.out)
    cs = load_class_set("imagenet52p")
    print(format_table(cs))
    root = Path(a.root) if a.root else out / "fake_imagenet"
    if a.root is None:
        t = time.perf_counter()
        if not (root / "train").is_dir():
            make_fake_imagenet(root, cs.wnids, FakeSpec(train_per_class=60, val_per_class=10, seed=0))
        print(f"\nsynthetic ImageNet tree (NOT real images) for {len(cs)} classes at {root} "
              f"({time.perf_counter() - t:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
