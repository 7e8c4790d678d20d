#!/usr/bin/env python
"""Write a synthetic ImageNet tree (folders layout) for tests, demos and benchmarks.

    python scripts/make_fake_imagenet.py OUT [--classes imagenet52p] [--train-per-class 8] ...
"""
import argparse
import sys
import time

from imagenet52p.classes import load_class_set
from imagenet52p.fake import FakeSpec, make_fake_imagenet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--classes", default="imagenet52p", help="imagenet52p | random52 | imagenet1k | PATH")
    p.add_argument("--train-per-class", type=int, default=8)
    p.add_argument("--val-per-class", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--noise", type=float, default=12.0)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    spec = FakeSpec(a.train_per_class, a.val_per_class, a.width, a.height, a.seed, a.quality, a.noise)
    wnids = load_class_set(a.classes).wnids
    t = time.perf_counter()
    make_fake_imagenet(a.out, wnids, spec)
    n = len(wnids) * (a.train_per_class + a.val_per_class)
    print(f"wrote {n} images of {len(wnids)} classes to {a.out} in {time.perf_counter() - t:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
