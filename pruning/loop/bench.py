"""Benchmarks of the loop (``python -m pruning.loop.bench ...``; numbers in docs/loop.md).

``steps``: wall time of each Algorithm 1 layer step (scoring, surgery, damage
eval, ``p`` epochs of fine-tuning, recovery eval) for a model on synthetic
in-memory data, from the run's own ``timing.json``.

``throughput``: fine-tuning images/s through our training step
(:func:`pruning.loop.train.train_chunk` over a :class:`~pruning.loop.data.DataStream`,
with bf16 autocast + channels_last on CUDA) against a minimal hand-written
PyTorch loop (DataLoader -> ``.to(device)`` -> forward/backward/step, the same
autocast, memory format, optimizer and batch size), on the same uint8 data in
the same process.  Each side gets a warm-up pass, then ``--repeats`` timed
passes (median reported); the GPU is synchronised at the end of each pass.
Ratio = ours / baseline images/s (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .config import RunOptions
from .data import DataStream
from .engine import prune_finetune
from .models import make_model
from .synthetic import pretrain, synthetic_splits
from .train import Runtime, make_optimizer, train_chunk


def bench_steps(model_name: str = "tinyvgg", classes: int = 10, per_class: int = 100, size: int = 32,
                p: float = 1.0, batch_size: int = 32, criterion: str = "l1", layers="all") -> dict:
    train, val, _ = synthetic_splits(classes, per_class, per_class // 4, 1, size=size, seed=0, noise=30.0)
    model = make_model(model_name, classes, seed=0)
    pretrain(model, train, epochs=2, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        s = prune_finetune(model, criterion, 0.5, layers, train, val, p=p, q=0, batch_size=batch_size, lr=0.01,
                           out_dir=out, options=RunOptions(progress=False, device="cpu"))
        total = time.perf_counter() - t
        timing = json.loads((__import__("pathlib").Path(out) / "timing.json").read_text())
    rows = []
    for step, tm in zip(s["steps"], timing["steps"]):
        rows.append({"layer": step["layer"], "filters": f"{step['filters_before']}->{step['filters_kept']}",
                     "finetune_images": step["finetune_images"], **tm})
    return {"model": model_name, "threads": torch.get_num_threads(), "train_images": len(train),
            "val_images": len(val), "input": [3, size, size], "p": p, "criterion": criterion, "steps": rows,
            "total_s": round(total, 2)}


def _minimal_loop(model, loader, device, amp, channels_last, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    n = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True).float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    return n


def bench_throughput(model_name: str, device: str | None = None, batch_size: int = 64, images: int = 1024,
                     size: int = 224, repeats: int = 3, num_workers: int = 0) -> dict:
    rt = Runtime.create(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 1000, (images,), generator=g)
    ds = TensorDataset(x, y)
    results = {}
    for side in ("baseline", "ours", "baseline", "ours"):  # interleaved; the first of each is the warm-up
        model = rt.prepare(make_model(model_name, 1000, seed=0))
        times = []
        for r in range(repeats if side in results else 1):
            rt.sync()
            t = time.perf_counter()
            if side == "baseline":
                loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                    pin_memory=rt.is_cuda, generator=torch.Generator().manual_seed(r))
                n = _minimal_loop(model, loader, rt.device, rt.amp, rt.channels_last, 0.01)
                rt.sync()
                stats = None
            else:
                stream = DataStream(ds, batch_size, seed=r, num_workers=num_workers, pin_memory=rt.is_cuda)
                opt = make_optimizer(model, 0.01, 0.9, 1e-4)
                stats = train_chunk(model, stream, r, images, opt, rt)
                n = stats.images
            times.append(time.perf_counter() - t)
        if side in results:
            med = statistics.median(times)
            results[side] = {"images_per_s": round(n / med, 1), "median_s": round(med, 3),
                             "spread_s": round(max(times) - min(times), 3)}
            if stats is not None:
                results[side].update(data_time_s=round(stats.data_time, 3), compute_time_s=round(stats.compute_time, 3))
        else:
            results[side] = None
    dev_name = torch.cuda.get_device_name(rt.device) if rt.is_cuda else "cpu"
    return {"model": model_name, "device": dev_name, "dtype": "bf16" if rt.amp else "fp32",
            "channels_last": rt.channels_last, "batch_size": batch_size, "images": images, "input": [3, size, size],
            "threads": torch.get_num_threads(), **results,
            "ratio_ours_over_baseline": round(results["ours"]["images_per_s"] / results["baseline"]["images_per_s"], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("steps")
    a.add_argument("--model", default="tinyvgg")
    a.add_argument("--classes", type=int, default=10)
    a.add_argument("--per-class", type=int, default=100)
    a.add_argument("--size", type=int, default=32)
    a.add_argument("--p", type=float, default=1.0)
    a.add_argument("--criterion", default="l1")
    a.add_argument("--threads", type=int, default=None)
    b = sub.add_parser("throughput")
    b.add_argument("--model", default="resnet50")
    b.add_argument("--device", default=None)
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--images", type=int, default=1024)
    b.add_argument("--size", type=int, default=224)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--workers", type=int, default=0)
    b.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cmd == "steps":
        out = bench_steps(args.model, args.classes, args.per_class, args.size, args.p, criterion=args.criterion)
    else:
        out = bench_throughput(args.model, args.device, args.batch_size, args.images, args.size, args.repeats,
                               args.workers)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
