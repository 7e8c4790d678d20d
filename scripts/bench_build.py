#!/usr/bin/env python
"""Throughput of build-imagenet52p against `tar cf` of the same files, measured in one run.

    python scripts/bench_build.py [--images 20000] [--cache /tmp/imagenet52p-bench] [--repeat 3]

Generates (once, cached in --cache) a folders-layout tree of ImageNet-52P classes with --images
realistic JPEGs (500x375, noise tuned to ~100 KB each, like ImageNet's ~110 KB average), then
times, after one warm-up read of the tree so every method reads from the page cache:

  tar cf   : `tar cf OUT.tar -C TREE train` (the baseline: copy bytes into one archive)
  build wN : `build-imagenet52p --root TREE --out OUT --workers N --quiet --val-per-class 50` (the
             default byte-copy build, shards of 1000), for N in --workers (default 1 2)

and prints images/s, MB/s (source bytes / wall second) and the ratio to tar.  Each timing is the
median of --repeat runs.  It also checks that the builds with different worker counts wrote
byte-identical manifests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from imagenet52p.classes import load_class_set
from imagenet52p.fake import FakeSpec, encode_jpeg, render_image


def _write_class(args) -> int:
    root, wnid, n, spec = args
    d = Path(root) / "train" / wnid
    d.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        p = d / f"{wnid}_{i}.JPEG"
        if not p.exists():
            p.write_bytes(encode_jpeg(render_image(wnid, i, spec, "train"), spec.quality))
        total += p.stat().st_size
    return total


def make_tree(root: Path, images: int, noise: float, procs: int) -> tuple[int, int]:
    """(number of images, bytes) of the cached tree, generating what is missing."""
    wnids = load_class_set("imagenet52p").wnids
    per_class = math.ceil(images / len(wnids))
    spec = FakeSpec(train_per_class=per_class, val_per_class=0, width=500, height=375, noise=noise)
    stamp = root / "bench_tree.json"
    want = {"per_class": per_class, "noise": noise, "classes": "imagenet52p", "size": [500, 375]}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        files = list((root / "train").glob("*/*.JPEG"))
        return len(files), sum(f.stat().st_size for f in files)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t = time.perf_counter()
    print(f"generating {per_class * len(wnids)} images in {root} ({procs} processes) ...", flush=True)
    with mp.Pool(procs) as pool:
        sizes = pool.map(_write_class, [(str(root), w, per_class, spec) for w in wnids], chunksize=1)
    stamp.write_text(json.dumps(want))
    print(f"generated in {time.perf_counter() - t:.0f}s", flush=True)
    return per_class * len(wnids), sum(sizes)


def timed(cmd: list[str], before=None) -> float:
    if before:
        before()
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr}")
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--cache", type=Path, default=Path("/tmp/imagenet52p-bench"),
                   help="where the generated tree is kept between runs")
    p.add_argument("--work", type=Path, default=None, help="scratch dir for outputs (default: CACHE/out)")
    p.add_argument("--noise", type=float, default=24.0, help="pixel noise std (24 gives ~100 KB per image)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--decode-check", action="store_true", help="also time a --decode-check build")
    a = p.parse_args(argv)
    if a.images < 20000:
        print(f"note: {a.images} images is fewer than the 20,000 the benchmark is specified for", flush=True)
    tree = a.cache / "tree"
    n, nbytes = make_tree(tree, a.images, a.noise, os.cpu_count() or 1)
    work = a.work or a.cache / "out"
    work.mkdir(parents=True, exist_ok=True)
    build = str(Path(sys.executable).with_name("build-imagenet52p"))
    vpc = str(min(50, n // 52 // 4))  # the default 50 unless the tree is tiny
    subprocess.run(f"tar cf - -C {tree} train | cat > /dev/null", shell=True, check=True)  # warm page cache

    def clean():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)

    rows = []
    tar_s = statistics.median(timed(["tar", "cf", str(work / "all.tar"), "-C", str(tree), "train"], clean)
                              for _ in range(a.repeat))
    rows.append(("tar cf", tar_s))
    manifests = {}
    variants = [(f"build w{w}", w, []) for w in a.workers]
    if a.decode_check:
        variants.append((f"build w{max(a.workers)} --decode-check", max(a.workers), ["--decode-check"]))
    for name, w, extra in variants:
        out = work / "build"
        times = [timed([build, "--root", str(tree), "--out", str(out), "--workers", str(w), "--quiet",
                              "--val-per-class", vpc, *extra],
                       clean) for _ in range(a.repeat)]
        rows.append((name, statistics.median(times)))
        if not extra:
            manifests[w] = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    shutil.rmtree(work, ignore_errors=True)
    mb = nbytes / 1e6
    print(f"\n{n} images, {mb:.0f} MB ({nbytes / n / 1e3:.0f} KB/image), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, median of {a.repeat}")
    print(f"{'method':<28}{'seconds':>9}{'images/s':>10}{'MB/s':>8}{'vs tar':>8}")
    for name, s in rows:
        print(f"{name:<28}{s:>9.2f}{n / s:>10.0f}{mb / s:>8.1f}{tar_s / s:>8.2f}")
    same = len(set(manifests.values())) == 1
    print(f"manifests identical across worker counts {sorted(manifests)}: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
