"""Speed of detectors: GFLOPs at a fixed input and proposal count, fps over the whole pipeline, speedups.

**Cost** (:func:`detector_cost`).  One MAC is one multiply-accumulate; ``GFLOPs = 2 * MACs / 1e9`` (the
convention of :mod:`pruning.cost`: ``torch.utils.flop_counter`` counts 2 FLOPs per MAC of convolutions and
matrix products; pooling, RoI pooling, activations, NMS, anchor decoding and bias additions are not
counted).  The cost is that of one image at a FIXED input and a FIXED number of proposals, so it depends
on the architecture only, never on the weights (pruned and unpruned detectors compare exactly):

- ``backbone``: the backbone on a ``(1, 3, H, W)`` zero batch.  By default (``resize=False``) ``(H, W) =
  image_size`` is given directly as the post-transform size (default ``(600, 1000)``: a VOC image after
  the VOC recipe's resize, shorter side 600, longer 1000), the same for every detector whatever its
  preset.  With ``resize=True``, ``image_size`` is an original image's size and ``(H, W)`` is what the
  detector's own ``GeneralizedRCNNTransform`` makes of it (resize to its ``min_size``/``max_size``,
  then zero padding to a multiple of ``size_divisible``: a 375x500 image at shorter side 600 -> 600x800,
  padded to 608x800);
- ``rpn``: the RPN head (3x3 conv + objectness and box-delta 1x1 convs) on that feature map;
- ``roi_heads``: the box head (fc6, fc7) and the box predictor on ``proposals`` RoIs (the test-time
  ``rpn_post_nms_top_n``, 300 in the VOC recipe), pooled by the detector's own RoI pooler, so
  ``roi_heads = proposals x`` the MACs of one RoI.

**fps** (:func:`measure_fps`): batch 1, ``detector([image])`` in eval mode under ``torch.inference_mode()``,
i.e. the whole pipeline: pre-processing (normalise, resize, pad), backbone, RPN (head, anchors, decoding,
NMS), RoI heads (pooling, box head, predictor, per-class NMS) and post-processing (boxes back to the
original image size).  Images are moved to ``device`` before timing (the host-to-device copy of the
input is not timed).  On CUDA the device is synchronised before and after each timed call.  ``warmup``
untimed rounds come first.  Then come ``repeats x len(images)`` timed rounds: in round ``k`` image
``k % len(images)`` runs once on every detector, in the order of ``detectors`` rotated left by ``k`` (so
a drift in the machine's speed hits all detectors alike, and none always runs first).  Per detector:
``median_ms`` and ``p10_ms``/``p90_ms`` over its rounds, ``fps = 1000 / median_ms``.

**Per-stage breakdown**: separate passes over the same schedule, after the timed ones, so hooks never
perturb ``median_ms``.  Hooks stamp ``time.perf_counter()`` (after a CUDA synchronisation) at the start of
``detector.forward`` and at the end of ``transform``, ``backbone``, ``rpn``, ``roi_heads`` and
``detector.forward``; a stage is the time between its stamp and the one before (``postprocess`` = end
of ``roi_heads`` to the end of the forward: ``transform.postprocess``), so the stages sum to the pass's
total.  The cost of the stamps (5 synchronisations on CUDA) is reported: ``breakdown_overhead_ms`` =
median breakdown-pass total minus ``median_ms`` (noise can make it negative).

**Speedup** (:func:`speedup_report`): predicted = ``gflops_base / gflops_pruned``; measured = ``fps_pruned /
fps_base`` (= ``median_base / median_pruned``); efficiency = measured / predicted (the classification
benchmark's words, docs/pruning.md).  The project's GPU target: at 50% pruning, batch 1, efficiency >= 0.7.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..cost import count_params, device_name
from ..surgery import eval_mode

STAGES = ("transform", "backbone", "rpn", "roi_heads", "postprocess")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TARGET_EFFICIENCY = 0.7  # GPU target: pruned 50% at batch 1, measured >= 0.7 x predicted speedup


def _check_detector(detector, what: str = "detector") -> None:
    for part in ("transform", "backbone", "rpn", "roi_heads"):
        if not isinstance(getattr(detector, part, None), nn.Module):
            raise ValueError(f"{what} must be a torchvision GeneralizedRCNN (FasterRCNN) with a .{part} module; "
                             f"got {type(detector).__name__} without it (build it with "
                             "pruning.detection.model.make_detector)")


def _macs(fn, *args):
    """(MACs, output) of ``fn(*args)``: ``FlopCounterMode``'s total FLOPs / 2 (pruning.cost's convention)."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn(*args)
    return int(counter.get_total_flops()) // 2, out


def _as_features(features) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict([("0", features)]) if isinstance(features, torch.Tensor) else features


def _size_pair(image_size, name: str = "image_size") -> Tuple[int, int]:
    size = tuple(int(s) for s in image_size) if isinstance(image_size, (tuple, list)) else ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be (H, W) with H, W >= 1; got {image_size!r}")
    return size


def post_transform_size(detector: nn.Module, image_size: Sequence[int]) -> Dict[str, List[int]]:
    """What the detector's ``GeneralizedRCNNTransform`` (eval mode) makes of an ``image_size`` image:
    ``{"resized": [h, w] (after the min_size/max_size rule), "input": [H, W] (after padding: the
    backbone's input)}``."""
    _check_detector(detector)
    h, w = _size_pair(image_size)
    param = next(detector.parameters())
    with eval_mode(detector.transform), torch.no_grad():
        batch, _ = detector.transform([torch.zeros(3, h, w, device=param.device, dtype=param.dtype)])
    return {"resized": [int(s) for s in batch.image_sizes[0]], "input": [int(s) for s in batch.tensors.shape[-2:]]}


def detector_cost(detector: nn.Module, image_size: Sequence[int] = (600, 1000), proposals: int = 300,
                  resize: bool = False) -> Dict[str, object]:
    """MACs and GFLOPs of one image at a fixed input and proposal count (module docstring), per stage:
    ``{"stages": {stage: {"macs", "gflops"}}, "macs", "gflops", "params", "image_size", "input_size",
    "feature_size", "proposals", "resize"}``.  ``resize=False``: ``image_size`` is the backbone's input itself;
    ``resize=True``: ``image_size`` goes through the detector's transform first."""
    _check_detector(detector)
    size = _size_pair(image_size)
    if isinstance(proposals, bool) or not isinstance(proposals, int) or proposals < 1:
        raise ValueError(f"proposals must be an int >= 1 (the fixed RoI count of the box head); got {proposals!r}")
    if resize:
        after = post_transform_size(detector, size)
        resized, input_size = after["resized"], after["input"]
    else:
        resized = input_size = list(size)
    param = next(detector.parameters())
    x = torch.zeros(1, 3, *input_size, device=param.device, dtype=param.dtype)
    heads = detector.roi_heads
    with eval_mode(detector), torch.no_grad():
        backbone, features = _macs(detector.backbone, x)
        features = _as_features(features)
        rpn, _ = _macs(detector.rpn.head, list(features.values()))
        h, w = resized
        boxes = torch.tensor([[0.0, 0.0, float(w), float(h)]], device=param.device, dtype=param.dtype)
        pooled = heads.box_roi_pool(features, [boxes.expand(proposals, 4).contiguous()], [tuple(resized)])
        roi, _ = _macs(lambda t: heads.box_predictor(heads.box_head(t)), pooled)
    stages = {"backbone": backbone, "rpn": rpn, "roi_heads": roi}
    total = sum(stages.values())
    feature = next(iter(features.values()))
    return {"stages": {k: {"macs": v, "gflops": 2 * v / 1e9} for k, v in stages.items()},
            "macs": total, "gflops": 2 * total / 1e9, "params": count_params(detector),
            "image_size": list(size), "input_size": list(input_size), "feature_size": list(feature.shape[-2:]),
            "proposals": proposals, "resize": bool(resize)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(times: Sequence[float]) -> Dict[str, float]:
    """median, p10, p90 (ms): the percentiles pick ``sorted[int(q * n)]`` as pruning.measure_latency does."""
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median_ms": statistics.median(ordered), "p10_ms": pick(0.1), "p90_ms": pick(0.9)}


def rotated_order(names: Sequence[str], k: int) -> List[str]:
    """The order of round ``k``: ``names`` rotated left by ``k`` (round 0 keeps the given order)."""
    n = len(names)
    return list(names[k % n:]) + list(names[:k % n])


class _StageClock:
    """Forward (pre-)hooks stamping the stage boundaries of a GeneralizedRCNN's forward (module docstring)."""

    def __init__(self, detector: nn.Module, device: torch.device):
        self.device, self.stamps, self.handles = device, {}, []
        self.proposals = 0
        self.handles.append(detector.register_forward_pre_hook(lambda *_: self._stamp("start")))
        for part in STAGES[:-1]:
            self.handles.append(getattr(detector, part).register_forward_hook(
                lambda *_, part=part: self._stamp(part)))
        self.handles.append(detector.rpn.register_forward_hook(self._count))
        self.handles.append(detector.register_forward_hook(lambda *_: self._stamp("end")))

    def _stamp(self, key: str) -> None:
        _sync(self.device)
        if key == "start":
            self.stamps = {}
        self.stamps[key] = time.perf_counter()

    def _count(self, module, args, output) -> None:
        self.proposals = int(output[0][0].shape[0])  # the RPN returns (boxes per image, losses)

    def stages_ms(self) -> Dict[str, float]:
        keys = ("start",) + STAGES[:-1] + ("end",)
        missing = [k for k in keys if k not in self.stamps]
        if missing:
            raise ValueError(f"the detector's forward never reached {missing}: it is not a GeneralizedRCNN forward "
                             "(transform -> backbone -> rpn -> roi_heads -> transform.postprocess)")
        return {stage: (self.stamps[b] - self.stamps[a]) * 1e3 for stage, a, b in zip(STAGES, keys, keys[1:])}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _check_fps_args(detectors, images, warmup, repeats, dtype) -> Optional[torch.dtype]:
    if not isinstance(detectors, Mapping) or not detectors:
        raise ValueError("detectors must be a non-empty dict {name: detector}; got "
                         f"{type(detectors).__name__} {'(empty)' if not detectors else ''}")
    for name, detector in detectors.items():
        _check_detector(detector, f"detectors[{name!r}]")
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError("images must be a non-empty list of (3, H, W) float tensors in [0, 1]")
    for i, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
            raise ValueError(f"images[{i}] must be a (3, H, W) float tensor; got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
    if isinstance(warmup, bool) or isinstance(repeats, bool) or warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1; got warmup={warmup!r}, repeats={repeats!r}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(DTYPES)} (or None = float32)")
        dtype = DTYPES[dtype]
    if dtype is not None and dtype not in DTYPES.values():
        raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(DTYPES)} (or None = float32)")
    return None if dtype in (None, torch.float32) else dtype


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _run(detector, image, device, dtype) -> Tuple[float, int]:
    """(ms, number of detections) of one synchronised call ``detector([image])``."""
    _sync(device)
    t0 = time.perf_counter()
    with _autocast(device, dtype):
        out = detector([image])
    _sync(device)
    return (time.perf_counter() - t0) * 1e3, int(out[0]["boxes"].shape[0])


def _rounds(detectors, images, rounds: int, device, dtype, on_call, bar=None) -> List[List[str]]:
    """Run ``rounds`` interleaved rounds (module docstring); ``on_call(name, ms, detections)`` after each call."""
    names, schedule = list(detectors), []
    for k in range(rounds):
        order = rotated_order(names, k)
        image = images[k % len(images)]
        for name in order:
            on_call(name, *_run(detectors[name], image, device, dtype))
        schedule.append(order)
        if bar is not None:
            bar.update(1)
    return schedule


def measure_fps(detectors: Mapping[str, nn.Module], images: Sequence[torch.Tensor], device="cpu", warmup: int = 2,
                repeats: int = 3, dtype=None, breakdown: bool = True, progress: bool = False) -> Dict[str, object]:
    """fps of each detector at batch 1 over the whole pipeline, interleaved, with a per-stage breakdown
    (module docstring for every definition).  The detectors are moved to ``device`` in place and put in eval
    mode for the measurement (their mode is restored).  ``dtype``: None/``"float32"``, or ``"bfloat16"`` /
    ``"float16"`` for autocast (weights stay float32).  Returns ``{"device", "dtype", "batch_size": 1,
    "images", "image_sizes", "warmup", "repeats", "rounds", "order": [[names of round k]...], "models":
    {name: {"median_ms", "p10_ms", "p90_ms", "fps", "times_ms", "detections_mean", "breakdown": {stage:
    {"median_ms", "p10_ms", "p90_ms"}}, "breakdown_total_ms", "breakdown_overhead_ms", "proposals_mean"}}}``
    (``detections_mean``: boxes returned per image; ``proposals_mean``: RPN proposals per image, from the
    breakdown passes: both depend on the weights, and so does the post-processing work)."""
    from ..loop.stages import progress_bar

    autocast = _check_fps_args(detectors, images, warmup, repeats, dtype)
    device = torch.device(device)
    images = [image.to(device) for image in images]
    rounds = repeats * len(images)
    times = {name: [] for name in detectors}
    counts = {name: [] for name in detectors}
    stages = {name: {stage: [] for stage in STAGES} for name in detectors}
    totals = {name: [] for name in detectors}
    proposals = {name: [] for name in detectors}
    with contextlib.ExitStack() as stack, torch.inference_mode():
        for detector in detectors.values():
            detector.to(device)
            stack.enter_context(eval_mode(detector))
        bar = stack.enter_context(progress_bar(warmup + rounds * (2 if breakdown else 1), "fps", progress, "round"))
        _rounds(detectors, images, warmup, device, autocast, lambda *_: None, bar)

        def timed(name, ms, n):
            times[name].append(ms)
            counts[name].append(n)
        order = _rounds(detectors, images, rounds, device, autocast, timed, bar)
        if breakdown:
            clocks = {name: _StageClock(detector, device) for name, detector in detectors.items()}
            stack.callback(lambda: [clock.remove() for clock in clocks.values()])

            def staged(name, ms, _):
                split = clocks[name].stages_ms()
                for stage, value in split.items():
                    stages[name][stage].append(value)
                totals[name].append(sum(split.values()))
                proposals[name].append(clocks[name].proposals)
            _rounds(detectors, images, rounds, device, autocast, staged, bar)
    models = {}
    for name in detectors:
        row = _summary(times[name])
        row.update(fps=1e3 / row["median_ms"], times_ms=times[name], detections_mean=statistics.mean(counts[name]))
        if breakdown:
            row["breakdown"] = {stage: _summary(v) for stage, v in stages[name].items()}
            row["breakdown_total_ms"] = statistics.median(totals[name])
            row["breakdown_overhead_ms"] = row["breakdown_total_ms"] - row["median_ms"]
            row["proposals_mean"] = statistics.mean(proposals[name])
        models[name] = row
    return {"device": device_name(device), "dtype": "float32" if autocast is None else str(autocast).replace("torch.", ""),
            "autocast": autocast is not None, "batch_size": 1, "images": len(images),
            "image_sizes": [list(image.shape[-2:]) for image in images], "warmup": warmup, "repeats": repeats,
            "rounds": rounds, "order": order, "models": models}


def speedup_report(base: Mapping[str, object], pruned: Mapping[str, object]) -> Dict[str, float]:
    """Measured vs FLOP-predicted speedup of ``pruned`` over ``base``.  Each is a mapping with ``gflops`` (a
    :func:`detector_cost`) and ``median_ms`` (a :func:`measure_fps` ``models`` entry), e.g. ``{**cost,
    **fps["models"][name]}``; costs and times must come from the same image size and run.  Returns
    ``predicted = gflops_base / gflops_pruned``, ``measured = fps_pruned / fps_base``, ``efficiency =
    measured / predicted``, ``gflops_reduction = 1 - gflops_pruned / gflops_base``, the four inputs, and,
    when both carry per-round ``times_ms`` of one interleaved run, ``measured_paired`` = the median over
    rounds of ``base_ms / pruned_ms`` (less sensitive to drift)."""
    for what, row in (("base", base), ("pruned", pruned)):
        missing = [k for k in ("gflops", "median_ms") if k not in row]
        if missing:
            raise ValueError(f"speedup_report: {what} lacks {missing}; pass {{**detector_cost(...), "
                             f"**measure_fps(...)['models'][name]}}")
        if not (row["gflops"] > 0 and row["median_ms"] > 0):
            raise ValueError(f"speedup_report: {what} needs gflops > 0 and median_ms > 0; got "
                             f"{row['gflops']!r}, {row['median_ms']!r}")
    predicted = base["gflops"] / pruned["gflops"]
    measured = base["median_ms"] / pruned["median_ms"]
    out = {"predicted": predicted, "measured": measured, "efficiency": measured / predicted,
           "gflops_base": base["gflops"], "gflops_pruned": pruned["gflops"],
           "gflops_reduction": 1 - pruned["gflops"] / base["gflops"],
           "fps_base": 1e3 / base["median_ms"], "fps_pruned": 1e3 / pruned["median_ms"]}
    tb, tp = base.get("times_ms"), pruned.get("times_ms")
    if tb and tp and len(tb) == len(tp):
        out["measured_paired"] = statistics.median(b / p for b, p in zip(tb, tp))
    return out
