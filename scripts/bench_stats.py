#!/usr/bin/env python
"""Cost of collecting criterion statistics, against a plain pass over the same batches, in one run.

    python scripts/bench_stats.py [--models resnet50 vgg16_bn] [--size 96] [--batch-size 8]
                                  [--batches 2] [--repeat 3] [--device cpu] [--json OUT]
                                  [--what activations batch-grads per-image]

For each model (random init, eval mode, every conv targeted: protocol ``all``) and the same fixed
batches of Gaussian images, times (median of --repeat runs, after one warm-up run):

  forward       : plain forward passes under inference_mode (baseline of the activation pass)
  activations   : one pass with hooks collecting everything mean_activation, apoz, entropy and
                  scaled_entropy need (pruning.collectors.activations.collect_activations, bins 10), then the
                  entropy of every layer (its histograms are computed once, after the pass)
  train step    : forward + backward of the mean cross-entropy (baseline of the gradient criteria)
  batch grads   : taylor + sensitivity_batch (pruning.collectors.gradients.collect_batch)
  per-image     : sensitivity, per-image gradients via torch.func.vmap (pruning.collectors.gradients.collect_per_image)

and prints ms per batch, its baseline's, and the median of the per-run ratios (each measurement is
interleaved with its baseline so that other processes' load hits both alike; target for activations:
<= 1.3x forward).
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

from pruning import prunable_layers, resolve_layers
from pruning.collectors import activations as stats, gradients
from pruning.cost import device_name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _time_pair(fn, base, repeat: int, device: torch.device):
    """Median time of ``fn`` and of ``base``, and the median of the per-repeat ratios fn/base.  The two
    are interleaved (base, fn, base, fn, ...) after one warm-up each, so that load from other processes
    on a shared machine hits both alike."""
    fn(), base()
    t_fn, t_base = [], []
    for _ in range(repeat):
        t_base.append(_once(base, device))
        t_fn.append(_once(fn, device))
    ratios = [a / b for a, b in zip(t_fn, t_base)]
    return statistics.median(t_fn), statistics.median(t_base), statistics.median(ratios)


WHAT = {"activations": "activations", "batch-grads": "batch grads", "per-image": "per-image"}


def bench_model(arch: str, size: int, batch_size: int, num_batches: int, repeat: int, device: torch.device,
                what=tuple(WHAT)):
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
        _ = [s.entropy(10) for s in st.values()]  # the lazy histograms: one host read per layer, at the end

    def train_step():
        for x, y in data:
            torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def batch_grads():
        gradients.collect_batch(model, refs, data)

    def per_image():
        gradients.collect_per_image(model, refs, data)

    rows = []
    for name, fn, base_name, base in [("activations", activations, "forward", forward),
                                      ("batch grads", batch_grads, "train step", train_step),
                                      ("per-image", per_image, "train step", train_step)]:
        if name not in {WHAT[w] for w in what}:
            continue
        row = {"model": arch, "what": name, "baseline": base_name, "size": size, "batch_size": batch_size,
               "batches": num_batches, "layers": len(refs), "device": device_name(device), "dtype": "float32",
               "repeat": repeat}
        try:
            t_fn, t_base, ratio = _time_pair(fn, base, repeat, device)
            row.update(ms_per_batch=t_fn * 1e3 / num_batches, baseline_ms_per_batch=t_base * 1e3 / num_batches,
                       ratio=ratio)
        except Exception as exc:  # record the failure in the row and carry on
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(f"  {arch} {name}: {row.get('ms_per_batch', float('nan')):.1f} ms/batch vs {base_name} "
              f"{row.get('baseline_ms_per_batch', float('nan')):.1f} {row.get('error', '')}", file=sys.stderr, flush=True)
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
    ap.add_argument("--what", nargs="+", choices=list(WHAT), default=list(WHAT),
                    help="which measurements (default: all three)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for arch in args.models:
        rows += bench_model(arch, args.size, args.batch_size, args.batches, args.repeat, device, args.what)
    print(f"{'model':10} {'what':12} {'ms/batch':>9} {'baseline':>10} {'ms/batch':>9} {'ratio':>7}  (device: "
          f"{rows[0]['device']}, {args.batch_size}x3x{args.size}x{args.size}, {args.batches} batches, medians of "
          f"{args.repeat} interleaved runs, load average {os.getloadavg()[0]:.1f} at the end)")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:10} {r['what']:12} FAILED {r['error']}")
            continue
        print(f"{r['model']:10} {r['what']:12} {r['ms_per_batch']:9.1f} {r['baseline']:>10} "
              f"{r['baseline_ms_per_batch']:9.1f} {r['ratio']:6.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
