#!/usr/bin/env python
"""Cost of collecting criterion statistics, against a plain pass over the same batches, in one run.

    python scripts/bench_stats.py [--models resnet50 vgg16_bn] [--size 96] [--batch-size 8]
                                  [--batches 2] [--repeat 3] [--device cpu] [--json OUT]

For each model (random init, eval mode, every conv targeted: protocol ``all``) and the same fixed
batches of Gaussian images, times (median of --repeat runs, after one warm-up run):

  forward       : plain forward passes under inference_mode (baseline of the activation pass)
  activations   : one pass with hooks collecting everything mean_activation, apoz, entropy and
                  scaled_entropy need (pruning.stats.collect_activations, bins 10)
  train step    : forward + backward of the mean cross-entropy (baseline of the gradient criteria)
  batch grads   : taylor + sensitivity_batch (pruning.gradients.collect_batch)
  per-image     : sensitivity, per-image gradients via torch.func.vmap (pruning.gradients.collect_per_image)

and prints ms per batch and the ratio to its baseline (target for activations: <= 1.3x forward).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

from pruning import gradients, prunable_layers, resolve_layers, stats
from pruning.cost import device_name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(arch: str, size: int, batch_size: int, num_batches: int, repeat: int, device: torch.device):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=1000).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch_size, 3, size, size, generator=gen).to(device),
             torch.randint(0, 1000, (batch_size,), generator=gen).to(device)) for _ in range(num_batches)]
    refs = resolve_layers(model, prunable_layers(model, "all"))
    params = [p for p in model.parameters()]

    def forward():
        with torch.inference_mode():
            for x, _ in data:
                model(x)

    def activations():
        st = stats.collect_activations(model, refs, data, bins=[10])
        _ = [s.entropy(10) for s in st.values()]  # the one host transfer at the end

    def train_step():
        for x, y in data:
            torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def batch_grads():
        gradients.collect_batch(model, refs, data)

    def per_image():
        gradients.collect_per_image(model, refs, data)

    rows = []
    for name, fn, base in [("forward", forward, None), ("activations", activations, "forward"),
                           ("train step", train_step, None), ("batch grads", batch_grads, "train step"),
                           ("per-image", per_image, "train step")]:
        row = {"model": arch, "what": name, "size": size, "batch_size": batch_size, "batches": num_batches,
               "layers": len(refs), "device": device_name(device), "dtype": "float32"}
        try:
            row["ms_per_batch"] = _time(fn, repeat, device) * 1e3 / num_batches
            row["baseline"] = base
        except Exception as exc:  # record the failure in the row and carry on
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(f"  {arch} {name}: {row.get('ms_per_batch', float('nan')):.1f} ms/batch {row.get('error', '')}",
              file=sys.stderr, flush=True)
    by_name = {r["what"]: r for r in rows}
    for r in rows:
        if r.get("baseline") and "ms_per_batch" in by_name[r["baseline"]]:
            r["ratio"] = r["ms_per_batch"] / by_name[r["baseline"]]["ms_per_batch"]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg16_bn"])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for arch in args.models:
        rows += bench_model(arch, args.size, args.batch_size, args.batches, args.repeat, device)
    print(f"{'model':10} {'what':12} {'ms/batch':>10} {'ratio':>7}  baseline   (device: {rows[0]['device']}, "
          f"{args.batch_size}x3x{args.size}x{args.size}, median of {args.repeat}, load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    for r in rows:
        ms = f"{r['ms_per_batch']:10.1f}" if "ms_per_batch" in r else f"{'FAILED':>10}"
        ratio = f"{r['ratio']:6.2f}x" if "ratio" in r else " " * 7
        print(f"{r['model']:10} {r['what']:12} {ms} {ratio}  {r.get('baseline') or ''} {r.get('error', '')}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
