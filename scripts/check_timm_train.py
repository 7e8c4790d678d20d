"""Run timm's own, unmodified ``train.py`` on a default build, as docs/dataset.md writes it, and count every
sample its reader yields: does each train and val sample come exactly once per epoch?

timm's ``train.py`` is not part of the timm wheel: pass the file from timm's repository (``--train-py``).
The script makes a synthetic ImageNet tree, builds it with ``build-imagenet52p``'s defaults (automatic shard
counts), asks ``imagenet52p info --readers`` for its prediction, then runs::

    [torchrun --standalone --nproc_per_node W] train.py --data-dir BUILD --dataset wds/imagenet52p \\
        --train-split train --val-split val --num-classes C -b B -j K --epochs E \\
        --model resnet10t --img-size 32 --device cpu ...

The only thing added to timm is an observer (a ``sitecustomize`` on ``PYTHONPATH``) that wraps
``timm.data.readers.reader_wds._decode``, which timm's wds pipeline calls on exactly the samples it yields
(after the shard split, the shuffle and ``with_epoch``), and writes each sample's ``__key__`` to a file per
process.  Each split's keys are compared with the build's: printed as ``exact`` or the repeats and misses.

    python scripts/check_timm_train.py --train-py /path/to/pytorch-image-models/train.py --world-size 2 \\
        --workers 2 --batch-size 5 --epochs 2
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

OBSERVER = '''
import os
import timm.data.readers.reader_wds as _r
_decode = _r._decode
def _observed(sample, *a, **k):
    with open(os.path.join(os.environ["KEYS_DIR"], f"{os.getpid()}.txt"), "a") as f:
        f.write(sample["__key__"] + "\\n")
    return _decode(sample, *a, **k)
_r._decode = _observed
'''


def build_keys(build: Path) -> dict[str, list[str]]:
    """Every split's sample keys, read from its shards (the tar members)."""
    manifest = json.loads((build / "manifest.json").read_text())
    out = {}
    for split, info in manifest["splits"].items():
        keys = []
        for shard in info["shards"]:
            with tarfile.open(build / shard["path"]) as tar:
                keys += sorted({m.name.rsplit(".", 1)[0] for m in tar.getmembers() if m.isfile()})
        out[split] = keys
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-py", required=True, type=Path, help="timm's train.py (from its repository)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--world-size", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--train-per-class", type=int, default=24, help="images per class in the tree's train/")
    ap.add_argument("--val-per-class", type=int, default=4, help="held out of train/ into our val split")
    ap.add_argument("--build-args", default="", help="extra build-imagenet52p options, e.g. '--shard-size 1000 "
                    "--eval-shard-size 250' for the fixed-size layout of builds made before automatic counts")
    args = ap.parse_args(argv)

    from imagenet52p.classes import load_class_set
    from imagenet52p.fake import FakeSpec, make_fake_imagenet

    work = args.out or Path(tempfile.mkdtemp(prefix="timm_train_"))
    work.mkdir(parents=True, exist_ok=True)
    wnids = sorted(load_class_set("imagenet52p").wnids[: args.classes])
    tree, build, keys_dir, obs = work / "tree", work / "build", work / "keys", work / "observer"
    if not tree.exists():
        make_fake_imagenet(tree, wnids, FakeSpec(train_per_class=args.train_per_class, val_per_class=2,
                                                 width=40, height=32))
    (work / "classes.txt").write_text("\n".join(wnids) + "\n")
    if not (build / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "imagenet52p.build_cli", "--root", str(tree), "--out", str(build),
                        "--classes", str(work / "classes.txt"), "--val-per-class", str(args.val_per_class),
                        "--workers", "1", "--quiet", *args.build_args.split()], check=True)
    expected = build_keys(build)
    info = subprocess.run([sys.executable, "-m", "benchmark.prune_cli", "info", str(build), "--readers",
                           "--world-size", str(args.world_size), "--workers", str(args.workers),
                           "--batch-size", str(args.batch_size)], capture_output=True, text=True)
    print("imagenet52p info --readers says:\n" + (info.stdout or info.stderr).rstrip())

    obs.mkdir(exist_ok=True)
    (obs / "sitecustomize.py").write_text(OBSERVER)
    if keys_dir.exists():
        for f in keys_dir.iterdir():
            f.unlink()
    keys_dir.mkdir(exist_ok=True)
    timm_args = [str(args.train_py), "--data-dir", str(build), "--dataset", "wds/imagenet52p",
                 "--train-split", "train", "--val-split", "val", "--num-classes", str(args.classes),
                 "-b", str(args.batch_size), "-j", str(args.workers), "--epochs", str(args.epochs),
                 "--model", "resnet10t", "--img-size", "32", "--device", "cpu", "--lr", "0.01", "--warmup-epochs",
                 "0", "--output", str(work / "timm_output"), "--log-interval", "1000", "--seed", "42"]
    if args.world_size > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.world_size}", *timm_args]
    else:
        cmd = [sys.executable, *timm_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(obs), os.environ.get("PYTHONPATH", "")]),
           "KEYS_DIR": str(keys_dir), "OMP_NUM_THREADS": "1"}
    print("running:", " ".join(cmd[:8]), "...")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-5000:])
        print(f"timm's train.py exited with status {proc.returncode}")
        return 1
    seen = collections.Counter()
    for f in keys_dir.iterdir():
        seen.update(f.read_text().split())
    verdicts = {}
    for split in ("train", "val"):
        want = collections.Counter({k: args.epochs for k in expected[split]})
        got = collections.Counter({k: seen[k] for k in expected[split]})
        repeats = sum(max(0, got[k] - want[k]) for k in want)
        misses = sum(max(0, want[k] - got[k]) for k in want)
        verdicts[split] = "exact" if not repeats and not misses else f"repeats {repeats}, misses {misses}"
        print(f"{split}: {len(expected[split])} samples x {args.epochs} epochs, {len(build_keys_shards(build, split))} "
              f"shards; timm's train.py at {args.world_size} rank(s) x {args.workers} worker(s), -b "
              f"{args.batch_size}: {verdicts[split]}")
    print(json.dumps({"world_size": args.world_size, "workers": args.workers, "batch_size": args.batch_size,
                      "epochs": args.epochs, "verdicts": verdicts}))
    return 0 if all(v == "exact" for v in verdicts.values()) else 2


def build_keys_shards(build: Path, split: str) -> list:
    return json.loads((build / "manifest.json").read_text())["splits"][split]["shards"]


if __name__ == "__main__":
    sys.exit(main())
