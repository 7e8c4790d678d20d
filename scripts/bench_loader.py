#!/usr/bin/env python
"""Loader throughput: ImageNet52P + imagenet52p.transforms against torchvision ImageFolder + the
standard transforms, on the same images, in one run.

    python scripts/bench_loader.py [--images 5200] [--batch-size 64] [--workers 2] [--repeat 3]
                                   [--cache /tmp/imagenet52p-bench-loader] [--json out.json]

Generates once (cached in --cache, resumable) a folders-layout tree of the 52 ImageNet-52P classes
with --images realistic JPEGs (500x375, noise 40: ~125 KB each, ImageNet averages ~110 KB), builds
it with build_dataset (all images in the train split, shards of 1000), reads all files once so both
come from the page cache, then times one full epoch (from creating the iterator, worker start-up
included) of each pipeline through a DataLoader with the same batch size and workers:

  train  ImageFolder(train, RandomResizedCrop(224)+RandomHorizontalFlip+ToTensor+Normalize)
         vs ImageNet52P("train", transforms.train(), collate) + transforms.Normalize on each batch
  eval   ImageFolder(train, Resize(256)+CenterCrop(224)+ToTensor+Normalize)
         vs ImageNet52P("train", transforms.eval(), shuffle=False) + Normalize

ImageFolder's batches come out normalised (float work in the workers); ours come out uint8, to be
normalised on the GPU by transforms.Normalize (the design). Rows "ImageNet52P" time the loader alone;
rows "ImageNet52P+CPU Normalize" also run Normalize on each batch in the main process on the CPU
(what a CPU-only training loop would pay; on 2 cores it competes with the workers). Each number is the median of --repeat epochs; pipelines
alternate so background load hits both alike. With CUDA, --gpu-decode also times batched nvJPEG
decoding (transforms.decode_jpeg_batch) + resize/crop on the GPU for the eval recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from imagenet52p import ImageNet52P
from imagenet52p import transforms as IT
from imagenet52p.builder import BuildConfig, build_dataset
from imagenet52p.classes import load_class_set
from imagenet52p.fake import FakeSpec, encode_jpeg, render_image


def _write_class(args) -> int:
    root, wnid, n, spec = args
    d = Path(root) / "train" / wnid
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = d / f"{wnid}_{i}.JPEG"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            tmp.write_bytes(encode_jpeg(render_image(wnid, i, spec, "train"), spec.quality))
            tmp.rename(p)  # a crash never leaves a half-written image behind
    return n


def prepare(cache: Path, images: int, noise: float, procs: int) -> tuple[Path, Path]:
    """(tree, build) in ``cache``, generating and building what is missing."""
    from tqdm import tqdm
    wnids = load_class_set("imagenet52p").wnids
    per_class = math.ceil(images / len(wnids))
    spec = FakeSpec(train_per_class=per_class, val_per_class=0, width=500, height=375, noise=noise)
    tag = f"n{per_class * len(wnids)}-noise{noise:g}"
    tree, out = cache / f"tree-{tag}", cache / f"build-{tag}"
    with mp.Pool(procs) as pool:
        jobs = [(tree, w, per_class, spec) for w in wnids]
        for _ in tqdm(pool.imap_unordered(_write_class, jobs), total=len(jobs), desc="generate", unit="class"):
            pass
    if not (out / "manifest.json").is_file():
        build_dataset(BuildConfig(root=tree, out=out, classes="imagenet52p", val_per_class=0, seed=0,
                                  workers=procs, shard_size=1000))
    return tree, out


def normalized_pipelines(tree: Path, out: Path):
    mean, std = IT.IMAGENET_MEAN, IT.IMAGENET_STD
    tv_train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    tv_eval = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean, std)])
    return {
        ("train", "ImageFolder"): (lambda bs: datasets.ImageFolder(tree / "train", tv_train), None, True),
        ("train", "ImageNet52P"): (lambda bs: ImageNet52P(out, "train", IT.train(), batch_size=bs), IT.collate, False),
        ("train", "ImageNet52P+CPU Normalize"): (lambda bs: ImageNet52P(out, "train", IT.train(), batch_size=bs),
                                                 IT.collate, False),
        ("eval", "ImageFolder"): (lambda bs: datasets.ImageFolder(tree / "train", tv_eval), None, False),
        ("eval", "ImageNet52P"): (lambda bs: ImageNet52P(out, "train", IT.eval(), shuffle=False, batch_size=bs),
                                  IT.collate, False),
        ("eval", "ImageNet52P+CPU Normalize"): (lambda bs: ImageNet52P(out, "train", IT.eval(), shuffle=False,
                                                                       batch_size=bs), IT.collate, False),
    }


def time_epoch(make, collate, shuffle, batch_size, workers, normalize=None) -> tuple[int, float]:
    ds = make(batch_size)
    kw = {"shuffle": shuffle} if shuffle else {}
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate, **kw)
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        for x, y in loader:
            if normalize is not None:
                x = normalize(x)
            n += len(y)
    return n, time.perf_counter() - start


def gpu_eval_epoch(out: Path, batch_size: int, workers: int) -> tuple[int, float]:
    """Eval recipe with nvJPEG: workers only read bytes; decode + resize + crop + normalise on CUDA."""
    ds = ImageNet52P(out, "train", _Raw(), shuffle=False, batch_size=batch_size)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_list_collate)
    ev = IT.eval()
    mean = torch.tensor(IT.IMAGENET_MEAN, device="cuda").view(3, 1, 1) * 255
    std = torch.tensor(IT.IMAGENET_STD, device="cuda").view(3, 1, 1) * 255
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        for datas, y in loader:
            crops = []
            for im in IT.decode_jpeg_batch(datas, device="cuda"):
                new_w, new_h = ev.output_size(im.shape[-1], im.shape[-2])
                r = torch.nn.functional.interpolate(im[None].float(), size=(new_h, new_w), mode="bilinear",
                                                    antialias=True, align_corners=False)[0]
                top, left = int(round((new_h - ev.size) / 2.0)), int(round((new_w - ev.size) / 2.0))
                crops.append(r[:, top:top + ev.size, left:left + ev.size])
            (torch.stack(crops) - mean) / std
            n += len(y)
        torch.cuda.synchronize()
    return n, time.perf_counter() - start


class _Raw:
    accepts_jpeg = True

    def __call__(self, data):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _list_collate(batch):
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5200)
    ap.add_argument("--noise", type=float, default=40.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/imagenet52p-bench-loader"))
    ap.add_argument("--json", type=Path, default=None, help="also write the result rows here")
    ap.add_argument("--gpu-decode", action="store_true", help="also time the CUDA nvJPEG eval path")
    args = ap.parse_args()
    if args.images < 1 or args.repeat < 1 or args.batch_size < 1 or args.workers < 0:
        ap.error("--images, --repeat and --batch-size must be >= 1, --workers >= 0")
    tree, out = prepare(args.cache, args.images, args.noise, max(1, os.cpu_count() or 1))
    normalize = IT.Normalize()
    pipes = normalized_pipelines(tree, out)
    for path in [*sorted((tree / "train").glob("*/*.JPEG")), *sorted(out.glob("train/*.tar"))]:
        path.read_bytes()  # both sources in the page cache before anything is timed
    times: dict = {k: [] for k in pipes}
    counts: dict = {}
    for _ in range(args.repeat):
        for key, (make, collate, shuffle) in pipes.items():
            n, dt = time_epoch(make, collate, shuffle, args.batch_size, args.workers,
                               normalize if key[1].endswith("CPU Normalize") else None)
            counts[key] = n
            times[key].append(dt)
    device = platform.processor() or platform.machine()
    print(f"# {counts[('train', 'ImageFolder')]} images 500x375, batch {args.batch_size}, workers {args.workers}, "
          f"{os.cpu_count()} CPUs ({device}), torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"{'recipe':6s} {'pipeline':26s} {'images/s':>9s} {'spread':>14s} {'ratio':>6s}")
    rows = []
    for recipe in ("train", "eval"):
        base = None
        for name in ("ImageFolder", "ImageNet52P", "ImageNet52P+CPU Normalize"):
            ts = times[(recipe, name)]
            rate = counts[(recipe, name)] / statistics.median(ts)
            base = base or rate
            spread = f"{counts[(recipe, name)] / max(ts):.0f}-{counts[(recipe, name)] / min(ts):.0f}"
            print(f"{recipe:6s} {name:26s} {rate:9.1f} {spread:>14s} {rate / base:6.2f}x")
            rows.append({"recipe": recipe, "pipeline": name, "images_per_s": rate, "ratio": rate / base,
                         "seconds": ts, "images": counts[(recipe, name)], "batch_size": args.batch_size,
                         "workers": args.workers, "cpus": os.cpu_count(), "device": "cpu"})
    if args.gpu_decode:
        if not torch.cuda.is_available():
            print("gpu-decode: skipped (no CUDA device)")
        else:
            n, dt = gpu_eval_epoch(out, args.batch_size, args.workers)
            rate = n / dt
            print(f"{'eval':6s} {'ImageNet52P+nvJPEG (GPU)':26s} {rate:9.1f} {'':>14s} {rate / rows[3]['images_per_s']:6.2f}x "
                  f"({torch.cuda.get_device_name()})")
            rows.append({"recipe": "eval", "pipeline": "ImageNet52P+nvJPEG", "images_per_s": rate,
                         "device": torch.cuda.get_device_name(), "images": n})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
