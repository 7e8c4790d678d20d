#!/usr/bin/env python
"""MAC-predicted vs measured speedup of physically pruned VGG-16 and ResNet-50, in one run.

    python scripts/bench_speedup.py [--configs vgg16:vgg16 resnet50:resnet50-16 resnet50:resnet50-32]
                                    [--ratios 0.25 0.5 0.75] [--batch-sizes 1 16] [--size 224]
                                    [--warmup 1] [--repeat 3] [--round-to 1] [--device cpu] [--json OUT]

For each ``arch:protocol`` config, the unpruned model (random init, eval) is the baseline, measured in
the same run interleaved with each pruned model (base, pruned, base, pruned, ...: load from other
processes on a shared machine hits both alike; measured speedup = median of the per-run ratios); each ratio prunes that fraction of the filters of every protocol layer (``l1`` scores,
``select_filters(ratio, round_to)``, ``apply_plan``).  Per row: params, MACs (pruning.count_cost, per
image), the MAC-predicted speedup ``macs_base / macs``, the measured speedup ``median_base / median``
(pruning.measure_latency: warm-up, inference_mode, median of --repeat) at each batch size, and
``efficiency = measured / predicted`` (target for VGG-16 at 50%: >= 0.8).  CPU threads:
``torch.set_num_threads(os.cpu_count())``.  On CUDA, ``--gpu-extra`` adds batch-256 throughput rows
in bf16 with channels_last, with and without ``round_to=8``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys

import torch
import torchvision

import pruning


def _prune(model, protocol: str, ratio: float, round_to: int):
    model = copy.deepcopy(model)
    if ratio > 0:
        scores = pruning.score_filters(model, "l1", protocol)
        plan = pruning.select_filters(scores, ratio, round_to=round_to)
        pruning.apply_plan(model, plan, torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device))
    return model


def _interleaved(base, model, size, bs, device, warmup: int, repeat: int):
    """Median ms of ``base`` and ``model`` and the median per-repeat ratio base/model; runs alternate
    (base, model, base, model, ...) so that load from other processes hits both alike."""
    for m in (base, model):
        pruning.measure_latency(m, size, bs, device, warmup=warmup, repeats=1)
    t_base, t_model = [], []
    for _ in range(repeat):
        t_base.append(pruning.measure_latency(base, size, bs, device, warmup=0, repeats=1)["median_ms"])
        t_model.append(pruning.measure_latency(model, size, bs, device, warmup=0, repeats=1)["median_ms"])
    ratio = statistics.median(b / m for b, m in zip(t_base, t_model))
    return statistics.median(t_base), statistics.median(t_model), ratio


def bench_config(arch: str, protocol: str, args, device: torch.device):
    torch.manual_seed(0)
    base = getattr(torchvision.models, arch)().eval().to(device)
    size = (3, args.size, args.size)
    base_cost = pruning.count_cost(base, size)
    rows = []
    for ratio in args.ratios:
        row = {"model": arch, "protocol": protocol, "ratio": ratio, "round_to": args.round_to,
               "device": pruning.cost.device_name(device), "dtype": "float32", "size": args.size,
               "base_params": base_cost["params"], "base_macs": base_cost["macs"]}
        try:
            model = _prune(base, protocol, ratio, args.round_to)
            cost = pruning.count_cost(model, size)
            row.update(params=cost["params"], macs=cost["macs"], predicted=base_cost["macs"] / cost["macs"])
            for bs in args.batch_sizes:
                t_base, t_model, measured = _interleaved(base, model, size, bs, device, args.warmup, args.repeat)
                row.update({f"base_ms_b{bs}": t_base, f"ms_b{bs}": t_model, f"measured_b{bs}": measured,
                            f"efficiency_b{bs}": measured / row["predicted"]})
            if device.type == "cuda" and args.gpu_extra:
                for rt in (1, 8):
                    m = _prune(base, protocol, ratio, rt)
                    lat = pruning.measure_latency(m, size, 256, device, warmup=3, repeats=args.repeat,
                                                  dtype=torch.bfloat16, channels_last=True)
                    row[f"img_s_b256_bf16_cl_round{rt}"] = lat["images_per_s"]
        except Exception as exc:  # record the failure in the row and carry on
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(_format(row, args.batch_sizes), flush=True)
    return rows


def _format(r, batch_sizes) -> str:
    if "error" in r:
        return f"{r['model']:9} {r['protocol']:12} {r['ratio']:5.2f}  FAILED {r['error']}"
    parts = [f"{r['model']:9} {r['protocol']:12} {r['ratio']:5.2f} {r['params'] / 1e6:7.2f}M/{r['base_params'] / 1e6:.2f}M "
             f"{r['macs'] / 1e9:6.3f}G/{r['base_macs'] / 1e9:.3f}G {r['predicted']:5.2f}x"]
    for bs in batch_sizes:
        parts.append(f"b{bs}: {r[f'ms_b{bs}']:8.1f}/{r[f'base_ms_b{bs}']:8.1f}ms {r[f'measured_b{bs}']:5.2f}x "
                     f"({r[f'efficiency_b{bs}']:4.2f})")
    for key in sorted(k for k in r if k.startswith("img_s_")):
        parts.append(f"{key}={r[key]:.0f}")
    return "  ".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["vgg16:vgg16", "resnet50:resnet50-16", "resnet50:resnet50-32"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: os.cpu_count())")
    ap.add_argument("--gpu-extra", action="store_true", help="on CUDA: batch-256 bf16 channels_last throughput")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count())
    print(f"threads={torch.get_num_threads()} device={pruning.cost.device_name(device)} input=3x{args.size}x{args.size}"
          f" median of {args.repeat} after {args.warmup} warm-up; load average {os.getloadavg()[0]:.1f}; columns: model protocol ratio params MACs/img "
          "predicted | per batch size: median ms pruned/unpruned, measured speedup (measured/predicted)", flush=True)
    rows = []
    for config in args.configs:
        arch, _, protocol = config.partition(":")
        rows += bench_config(arch, protocol or "all", args, device)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
