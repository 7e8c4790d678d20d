#!/usr/bin/env python
"""GFLOPs, fps and throughput of Faster R-CNN VGG-16 detectors pruned at random, in one run.

    python scripts/bench_detect.py [--device cpu] [--size S] [--images 3] [--repeats 2] [--warmup 1]
                                   [--ratios 0.25 0.5 0.75] [--train-steps N] [--batch-sizes 1 2]
                                   [--dtype float32] [--seed 0] [--threads N] [--out FILE] [--smoke]

The unpruned detector is ``make_detector("vgg16", preset="voc-vgg16", seed=--seed)`` (random init) with
the shorter side resized to ``--size`` (default 600 on CUDA, the VOC recipe; 320 on CPU, to finish in a
few minutes) and the longer side to at most ``round(size * 1000 / 600)``.  Each ratio prunes a copy:
every one of the 13 backbone convs keeps ``n - floor(ratio * n)`` filters chosen by uniform random
scores (a generator seeded by ``--seed`` and the conv's position; ``pruning.select_filters``), applied
with ``pruning.apply_plan`` (the RPN conv and fc6 follow).  ``--images`` synthetic images (uniform noise,
375x500, the commonest VOC shape) are the input.  ``box_score_thresh`` is 0 (the recipe's is 0.05):
random weights give arbitrary class scores, so that at 0.05 one model would keep 100 boxes per image and
another none; at 0 every model sends all ``proposals x 20`` boxes to the per-class NMS and returns 100,
the same post-processing work for all.  Per model (pruning.detection.speed):

- GFLOPs (2 x MACs / 1e9) at a 600x1000 backbone input (a VOC image after the VOC recipe's resize,
  whatever ``--size``) with 300 proposals, its reduction against the unpruned one, and GFLOPs at the
  run's input (the 375x500 image through the detector's transform, test-time proposal count);
- fps at batch 1 over the whole pipeline, all models interleaved in the same run (``measure_fps``),
  with the per-stage breakdown; measured speedup = fps / unpruned fps, predicted = GFLOPs ratio at the
  run's size, efficiency = measured / predicted;
- training throughput: images/s of the trainer's own iteration (``pruning.detection.train.train_step`` with
  ``make_optimizer``'s groups at lr 1e-4; conv1-2 frozen as in the preset; bf16 autocast on CUDA, fp32 on
  CPU) at each ``--batch-sizes``, on the synthetic images with 1-3 random boxes each, one warm-up step then
  the median of ``--train-steps`` (default 5 on CUDA, 1 on CPU);
- eval throughput: images/s of ``pruning.detection.evaluate.evaluate_detector`` (forward, host copies and the
  metric's matching) at each batch size, over ``--train-steps`` batches after one warm-up batch.

On CUDA the GPU target is printed: pruned 50% at batch 1, efficiency >= 0.7 -> PASS, else FAIL (the paper
measured 1.73x fps at 50%).  ``--smoke``: a tinyvgg detector (tiny preset) on 96x128 images, 1 round,
for tests.  A model that fails gets an ``error`` in its row, the others go on; the exit status is 1
when some row failed.  JSON (--out): ``{"config", "device", "dtype", "threads", "load_average", "fps"
(measure_fps's result), "models": [rows], "target"}``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

import pruning
from pruning.detection import speed
from pruning.detection.model import backbone_layers, make_detector
from pruning.loop.rundir import write_json_atomic

FULL = dict(arch="vgg16", preset="voc-vgg16", image=(375, 500))
SMOKE = dict(arch="tinyvgg", preset="tiny", image=(96, 128))


def random_plan(detector, ratio: float, seed: int) -> dict:
    """Uniform random scores per backbone conv (generator seed ``seed * 1000 + position``) -> select_filters."""
    modules = dict(detector.named_modules())
    scores = {}
    for i, name in enumerate(backbone_layers(detector)):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        scores[name] = torch.rand(modules[name].out_channels, generator=gen)
    return pruning.select_filters(scores, ratio)


def synthetic(n: int, size, seed: int, num_classes: int = 21):
    """``n`` noise images (3, H, W) in [0, 1] and targets with 1-3 random boxes (labels 1..num_classes-1)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, h, w, generator=gen))
        k = int(torch.randint(1, 4, (1,), generator=gen))
        xy = torch.rand(k, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
        wh = (0.2 + 0.2 * torch.rand(k, 2, generator=gen)) * torch.tensor([w, h])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, num_classes, (k,), generator=gen)})
    return images, targets


def train_throughput(detector, images, targets, batch_size: int, steps: int, device) -> float:
    """Images/s of the trainer's own iteration on a copy of ``detector``: ``pruning.detection.train.train_step``
    with its optimizer (``make_optimizer``: bias groups) and runtime (bf16 autocast on CUDA), one warm-up
    iteration, median of ``steps``."""
    from pruning.detection.train import DetTrainConfig, make_optimizer, train_step
    from pruning.loop.train import Runtime

    runtime = Runtime.create(str(device), amp=True, channels_last=False)
    model = copy.deepcopy(detector).to(runtime.device)
    opt = make_optimizer(model, DetTrainConfig(iterations=1, lr=1e-4))
    items = list(zip(images, targets))
    times = []
    for i in range(steps + 1):
        chunk = [items[(i * batch_size + j) % len(items)] for j in range(batch_size)]
        speed._sync(runtime.device)
        t0 = time.perf_counter()
        train_step(model, chunk, opt, batch_size, runtime, 1e-4)
        speed._sync(runtime.device)
        times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times[1:])


def eval_throughput(detector, images, targets, batch_size: int, steps: int, device) -> float:
    """Images/s of ``pruning.detection.evaluate.evaluate_detector`` (forward in the runtime's precision, the
    detections' copies to the host, the metric's matching) over ``steps`` batches, after one warm-up batch."""
    from pruning.detection.evaluate import evaluate_detector

    data = [(images[i % len(images)], targets[i % len(targets)]) for i in range(batch_size * steps)]
    evaluate_detector(detector, data[:batch_size], device=device, batch_size=batch_size)
    speed._sync(device)
    t0 = time.perf_counter()
    evaluate_detector(detector, data, device=device, batch_size=batch_size)
    speed._sync(device)
    return len(data) / (time.perf_counter() - t0)


def build_models(args, kind, device):
    """({name: detector}, {name: row}); a ratio whose pruning fails gets a row with ``error``."""
    size = args.size
    base = make_detector(kind["arch"], preset=kind["preset"], seed=args.seed, min_size=size,
                         max_size=max(size, round(size * 1000 / 600)), box_score_thresh=0.0).to(device)
    models, rows = {"unpruned": base}, {"unpruned": {"model": "unpruned", "ratio": 0.0}}
    for ratio in args.ratios:
        name = f"{round(ratio * 100)}%"
        rows[name] = {"model": name, "ratio": ratio}
        try:
            model = copy.deepcopy(base)
            pruning.apply_plan(model, random_plan(model, ratio, args.seed))
            models[name] = model
        except Exception as exc:  # record the failure in the row and carry on
            rows[name]["error"] = f"{type(exc).__name__}: {exc}"
    return models, rows


def _costs(models, rows, image):
    base_full = base_run = None
    for name, model in models.items():
        with pruning.surgery.eval_mode(model):
            proposals = model.rpn.post_nms_top_n()  # the test-time count (300 in the VOC recipe)
        full = speed.detector_cost(model, (600, 1000), proposals=300)
        run = speed.detector_cost(model, image, proposals=proposals, resize=True)
        base_full, base_run = base_full or full, base_run or run
        rows[name].update(params=full["params"], gflops_600x1000=full["gflops"],
                          gflops_reduction_600x1000=1 - full["gflops"] / base_full["gflops"],
                          stage_gflops_600x1000={k: v["gflops"] for k, v in full["stages"].items()},
                          gflops=run["gflops"], input_size=run["input_size"], proposals=run["proposals"])
    return base_run


def _throughputs(models, rows, images, targets, args, device):
    for name, model in models.items():
        try:
            for bs in args.batch_sizes:
                rows[name][f"train_img_s_b{bs}"] = train_throughput(model, images, targets, bs, args.train_steps, device)
                rows[name][f"eval_img_s_b{bs}"] = eval_throughput(model, images, targets, bs, args.train_steps, device)
        except Exception as exc:  # record the failure in the row and carry on
            rows[name]["error"] = f"{type(exc).__name__}: {exc}"


def _target(rows, device) -> dict:
    row = rows.get("50%")
    out = {"ratio": 0.5, "batch_size": 1, "threshold": speed.TARGET_EFFICIENCY, "efficiency": None, "pass": None}
    if row is None or "efficiency" not in row:
        out["note"] = "not measured (0.5 not in --ratios, or its row failed)"
    else:
        out["efficiency"] = row["efficiency"]
        if device.type == "cuda":
            out["pass"] = row["efficiency"] >= speed.TARGET_EFFICIENCY
        else:
            out["note"] = "the target is for a GPU; not evaluated on CPU"
    return out


def _format(r) -> str:
    if "fps" not in r:
        return f"{r['model']:9} FAILED {r.get('error', 'not measured')}"
    line = (f"{r['model']:9} {r['params'] / 1e6:7.2f}M {r['gflops_600x1000']:8.2f}G "
            f"(-{100 * r['gflops_reduction_600x1000']:4.1f}%) {r['gflops']:8.2f}G {r['fps']:7.2f} fps "
            f"{r['median_ms']:8.1f} ms [{r['p10_ms']:.1f}, {r['p90_ms']:.1f}]")
    if "predicted" in r:
        line += f"  {r['measured']:5.2f}x / {r['predicted']:5.2f}x = {r['efficiency']:4.2f}"
    stages = " ".join(f"{k}={v['median_ms']:.1f}" for k, v in r.get("breakdown", {}).items())
    thr = " ".join(f"{k.replace('_img_s', '')}={r[k]:.2f}" for k in sorted(r) if "_img_s_b" in k)
    return line + f"\n{'':9} stages ms: {stages}; images/s: {thr}" + (f"; ERROR {r['error']}" if "error" in r else "")


def _log(what: str, t0: float) -> None:
    print(f"bench_detect: {what} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def run(args) -> dict:
    device = torch.device(args.device)
    kind = SMOKE if args.smoke else FULL
    t0 = time.perf_counter()
    models, rows = build_models(args, kind, device)
    images, targets = synthetic(args.images, kind["image"], args.seed)
    base_run = _costs(models, rows, kind["image"])
    _log(f"built and pruned {len(models)} detectors, GFLOPs counted", t0)
    t0 = time.perf_counter()
    fps = speed.measure_fps(models, images, device, warmup=args.warmup, repeats=args.repeats, dtype=args.dtype,
                            progress=not args.quiet)
    _log("fps measured", t0)
    for name, timing in fps["models"].items():
        rows[name].update({k: v for k, v in timing.items() if k != "times_ms"})
        if name != "unpruned":
            rows[name].update(speed.speedup_report({**base_run, **fps["models"]["unpruned"]},
                                                   {"gflops": rows[name]["gflops"], **timing}))
    if args.train_steps > 0:
        t0 = time.perf_counter()
        _throughputs(models, rows, images, targets, args, device)
        _log("train / eval throughput measured", t0)
    return {"config": vars(args), "arch": kind["arch"], "preset": kind["preset"], "image_size": list(kind["image"]),
            "device": pruning.cost.device_name(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0], "fps": fps, "models": list(rows.values()),
            "target": _target(rows, device)}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=None, help="shorter side after resizing (default 600 on CUDA, 320 on CPU)")
    ap.add_argument("--images", type=int, default=3, help="synthetic images (each round times one)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the images")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--train-steps", type=int, default=None,
                    help="timed steps of the train/eval throughput (default 5 on CUDA, 1 on CPU; 0: skip)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--dtype", default="float32", choices=sorted(speed.DTYPES), help="fps autocast dtype (train/eval throughput use the trainer's and evaluator's own precision: bf16 on CUDA)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: os.cpu_count())")
    ap.add_argument("--out", default=None, help="also write the result to this JSON file")
    ap.add_argument("--smoke", action="store_true", help="tinyvgg / tiny preset on 96x128 images, 1 round")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_detect: --device cuda but torch.cuda.is_available() is False; use --device cpu")
    cuda = device.type == "cuda"
    if args.smoke:
        args.size, args.images, args.repeats, args.warmup, args.train_steps = 128, 2, 1, 0, 1
    args.size = args.size or (600 if cuda else 320)
    args.train_steps = (5 if cuda else 1) if args.train_steps is None else args.train_steps
    if min(args.images, args.repeats, args.size) < 1 or args.warmup < 0 or args.train_steps < 0:
        raise SystemExit("bench_detect: need --images, --repeats, --size >= 1 and --warmup, --train-steps >= 0")
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count())
    print(f"threads={torch.get_num_threads()} device={pruning.cost.device_name(device)} dtype={args.dtype} "
          f"shorter side {args.size}; fps: median of {args.repeats} x {args.images} interleaved rounds after "
          f"{args.warmup} warm-up; load average {os.getloadavg()[0]:.1f}; columns: model params GFLOPs@600x1000 "
          "(reduction) GFLOPs@run fps median [p10, p90] measured/predicted = efficiency", flush=True)
    t0 = time.perf_counter()
    result = run(args)
    for row in result["models"]:
        print(_format(row), flush=True)
    target = result["target"]
    if target["pass"] is not None:
        print(f"target (GPU, 50%, batch 1): efficiency {target['efficiency']:.2f} >= {target['threshold']}: "
              f"{'PASS' if target['pass'] else 'FAIL'}", flush=True)
    else:
        print(f"target (GPU, 50%, batch 1): {target['note']}", flush=True)
    result["wall_s"] = time.perf_counter() - t0
    if args.out:
        write_json_atomic(args.out, result)
    return 1 if any("error" in row for row in result["models"]) else 0


if __name__ == "__main__":
    sys.exit(main())
