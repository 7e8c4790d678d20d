"""Benchmarks of the loop (``python -m benchmark.throughput ...``; numbers in docs/algorithm1.md, "Measured").

``steps``: wall time of each Algorithm 1 layer step (scoring, surgery, damage
eval, ``p`` epochs of fine-tuning, recovery eval) for a model on synthetic
in-memory data, from the run's own ``timing.json``.

``throughput``: fine-tuning images/s through our training step
(:func:`pruning.loop.train.train_chunk` over a :class:`~pruning.loop.data.DataStream`,
with bf16 autocast + channels_last on CUDA) against a minimal hand-written
PyTorch loop (DataLoader -> ``.to(device)`` -> forward/backward/step, the same
autocast, memory format, optimizer and batch size), on the same data in the
same process: random uint8 images in memory (compute-bound), or with
``--data BUILD`` one pass over a build's train split through the loop's own
shard loaders (decoding included).  Each side gets a warm-up pass, then
``--repeats`` timed passes (the median is reported, with its data time =
waiting for the next batch incl. the host-to-device copy call, and compute
time = the rest); the GPU is synchronised at the end of each pass.
Ratio = ours / baseline images/s (1.0 = no overhead).  An evaluation pass of
ours is timed too (``eval.images_per_s``, for ``imagenet52p-bench estimate``).
``--model resnet50,vgg16`` measures several models in one run.

``overhead``: the host time per optimizer step our loop adds to the minimal
loop, measured with a model that costs almost nothing (:func:`bench_overhead`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning.cost import device_name
from pruning.loop.config import RunOptions
from pruning.loop.data import DataStream
from pruning.loop.engine import prune_finetune
from pruning.loop.models import make_model
from .synthetic import pretrain, synthetic_splits
from pruning.loop.train import Runtime, make_optimizer, train_chunk


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
        timing = json.loads((Path(out) / "timing.json").read_text())
    rows = []
    for step, tm in zip(s["steps"], timing["steps"]):
        rows.append({"layer": step["layer"], "filters": f"{step['filters_before']}->{step['filters_kept']}",
                     "finetune_images": step["finetune_images"], **tm})
    return {"model": model_name, "threads": torch.get_num_threads(), "train_images": len(train),
            "val_images": len(val), "input": [3, size, size], "p": p, "criterion": criterion, "steps": rows,
            "total_s": round(total, 2)}


def _minimal_loop(model, loader, device, amp, channels_last, lr, normalize=None):
    """The baseline: a minimal hand-written PyTorch training loop (timed data waits, nothing else added)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    n = 0
    data_time = 0.0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            break
        x = batch[0].to(device, non_blocking=True)
        x = normalize(x) if normalize is not None else x.float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch[1].to(device, non_blocking=True)
        data_time += time.perf_counter() - t0
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    return n, data_time


def _in_memory(images: int, size: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 1000, (images,), generator=g)
    return TensorDataset(x, y)


def bench_throughput(model_name: str, device: str | None = None, batch_size: int = 64, images: int = 1024,
                     size: int = 224, repeats: int = 3, num_workers: int = 0, data: str | None = None,
                     eval_pass: bool = True) -> dict:
    """Training images/s of our loop vs :func:`_minimal_loop` on the same data (module docstring).

    ``data=None``: ``images`` random uint8 images in memory (the loader costs nothing: compute-bound).
    ``data=BUILD``: one pass over the train split of a build (``build-imagenet52p --out``) through the
    loop's own loaders (:func:`benchmark.data.open_data`: shard reading, JPEG decoding, random
    resized crop, ``Normalize`` on the device) for both sides, which shows whether the data pipeline
    keeps up.  ``eval_pass``: also time one evaluation pass of ours (for ``imagenet52p-bench estimate``).
    """
    rt = Runtime.create(device)
    if data is None:
        train_data = _in_memory(images, size)
        eval_data = train_data
        num_classes = 1000

        def baseline_loader(r):
            return DataLoader(train_data, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              pin_memory=rt.is_cuda, generator=torch.Generator().manual_seed(r))
    else:
        from .data import Transforms, open_data
        rd = open_data(data, sizes=Transforms(size), batch_size=batch_size, num_workers=num_workers)
        train_data, eval_data, num_classes = rd.train, rd.val, rd.num_labels
        rt.normalize = rd.batch_transform.to(rt.device)  # as the engine does: its constants on the device

        def baseline_loader(r):
            rd.train.dataset.set_epoch(r)
            return rd.train
    results = {}
    for side in ("baseline", "ours", "baseline", "ours"):  # interleaved; the first of each is the warm-up
        model = rt.prepare(make_model(model_name, num_classes, seed=0))
        times, data_times, stats = [], [], None
        for r in range(repeats if side in results else 1):
            rt.sync()
            t = time.perf_counter()
            if side == "baseline":
                n, dt = _minimal_loop(model, baseline_loader(r), rt.device, rt.amp, rt.channels_last, 0.01,
                                      rt.normalize)
                rt.sync()
            else:
                stream = DataStream(train_data, batch_size, seed=r, num_workers=num_workers, pin_memory=rt.is_cuda)
                opt = make_optimizer(model, 0.01, 0.9, 1e-4)
                stats = train_chunk(model, stream, r, stream.pass_images, opt, rt)
                n, dt = stats.images, stats.data_time
            times.append(time.perf_counter() - t)
            data_times.append(dt)
        if side not in results:
            results[side] = None
            continue
        i = times.index(statistics.median_low(times))
        results[side] = {"images": n, "images_per_s": round(n / times[i], 1), "median_s": round(times[i], 3),
                         "spread_s": round(max(times) - min(times), 3), "data_time_s": round(data_times[i], 3),
                         "compute_time_s": round(times[i] - data_times[i], 3)}
        if side == "ours" and eval_pass:
            results["eval"] = _time_eval(model, eval_data, batch_size, num_workers, rt)
    return _report(model_name, rt, batch_size, size, data, images, num_workers, results)


def _report(model_name, rt, batch_size, size, data, images, num_workers, results) -> dict:
    if results["baseline"]["images"] != results["ours"]["images"]:
        raise RuntimeError(f"the two loops trained on different numbers of images: {results}")
    return {"model": model_name, "device": device_name(rt.device), "dtype": "bf16" if rt.amp else "fp32",
            "channels_last": rt.channels_last, "batch_size": batch_size, "input": [3, size, size],
            "data": data or f"in-memory uint8, {images} images", "workers": num_workers,
            "threads": torch.get_num_threads(), **results,
            "ratio_ours_over_baseline": round(results["ours"]["images_per_s"] / results["baseline"]["images_per_s"], 3)}


def _time_eval(model, eval_data, batch_size: int, num_workers: int, rt) -> dict:
    """Images/s of one evaluation pass of ours, after a warm-up pass (cudnn picks its eval kernels)."""
    from pruning.loop.evaluate import evaluate

    stream = DataStream(eval_data, batch_size, shuffle=False, num_workers=num_workers, pin_memory=rt.is_cuda)
    evaluate(model, stream, rt)
    rt.sync()
    t = time.perf_counter()
    ev = evaluate(model, stream, rt)
    return {"images": ev["images"], "images_per_s": round(ev["images"] / (time.perf_counter() - t), 1)}


def bench_overhead(steps: int = 2000, batch_size: int = 4, repeats: int = 5, device: str | None = None) -> dict:
    """Host time per optimizer step that our loop adds to the minimal loop, with a model that costs
    almost nothing (1x1 conv -> pool -> linear on 8x8 images), so the difference of the two per-step
    times is the loop's own bookkeeping (stream, LR setting, DDP/accumulation logic, progress).  On a
    GPU that time overlaps with the device's work as long as no step waits for the device
    (tests/pruning/test_host_sync.py); the overhead a GPU run can show is at most this time divided by the
    GPU's time per step."""
    rt = Runtime.create(device)
    ds = _in_memory(steps * batch_size, 8)

    def tiny():
        torch.manual_seed(0)
        return rt.prepare(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(8, 1000)))

    per_step = {"baseline": [], "ours": []}
    for r in range(repeats + 1):  # the first round is the warm-up
        for side in ("baseline", "ours"):
            model = tiny()
            rt.sync()
            t = time.perf_counter()
            if side == "baseline":
                loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(r))
                _minimal_loop(model, loader, rt.device, rt.amp, rt.channels_last, 0.01)
            else:
                train_chunk(model, DataStream(ds, batch_size, seed=r), r, len(ds), make_optimizer(model, 0.01, 0.9, 1e-4),
                            rt, lr_fn=lambda t: 0.01)
            rt.sync()
            if r:
                per_step[side].append((time.perf_counter() - t) / steps * 1e6)
    base, ours = statistics.median(per_step["baseline"]), statistics.median(per_step["ours"])
    return {"device": device_name(rt.device), "steps": steps, "batch_size": batch_size, "repeats": repeats,
            "baseline_us_per_step": round(base, 1), "ours_us_per_step": round(ours, 1),
            "added_us_per_step": round(ours - base, 1),
            "spread_us": {k: round(max(v) - min(v), 1) for k, v in per_step.items()}}


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
    c = sub.add_parser("overhead")
    c.add_argument("--steps", type=int, default=2000)
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--device", default=None)
    c.add_argument("--threads", type=int, default=None)
    b = sub.add_parser("throughput")
    b.add_argument("--model", default="resnet50", help="a model name, or several separated by commas")
    b.add_argument("--device", default=None)
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--images", type=int, default=1024, help="in-memory images (without --data)")
    b.add_argument("--data", default=None, help="a build directory: one pass over its train split")
    b.add_argument("--size", type=int, default=224)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--workers", type=int, default=0)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--no-eval", action="store_true", help="skip the evaluation pass")
    b.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cmd == "steps":
        out = bench_steps(args.model, args.classes, args.per_class, args.size, args.p, criterion=args.criterion)
    elif args.cmd == "overhead":
        out = bench_overhead(args.steps, args.batch_size, args.repeats, args.device)
    else:
        out = []
        for name in args.model.split(","):
            r = bench_throughput(name, args.device, args.batch_size, args.images, args.size, args.repeats,
                                 args.workers, args.data, not args.no_eval)
            print(f"{name}: ours {r['ours']['images_per_s']} img/s vs minimal loop {r['baseline']['images_per_s']} "
                  f"img/s, ratio {r['ratio_ours_over_baseline']} (data {r['ours']['data_time_s']} s of "
                  f"{r['ours']['median_s']} s)", file=sys.stderr)
            out.append(r)
        out = out[0] if len(out) == 1 else out
    if getattr(args, "out", None):
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
