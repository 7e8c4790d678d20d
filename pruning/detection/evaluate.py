"""Evaluation of a detector over a split: its detections into the VOC metric (:mod:`pruning.detection.metric`).

``evaluate_detector`` runs the detector in eval mode under ``torch.inference_mode`` (bf16 autocast on CUDA,
fp32 on CPU) on every image of the split once, in order, and feeds a :class:`DetectionAccumulator` with
the detections (moved to CPU as float32, boxes in the original image's coordinates: torchvision's
``GeneralizedRCNNTransform.postprocess`` maps them back) and the targets of the dataset items
(``boxes``, ``labels`` and ``difficult``: a detection matching a difficult object is ignored, difficult
objects are not positives).  Both VOC metrics come from one matching pass.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..loop.rng import rng_preserved
from ..loop.stages import progress_bar
from ..loop.train import Runtime
from ..surgery import eval_mode
from .metric import DetectionAccumulator, default_class_names

log = logging.getLogger(__name__)


def _pairs(batch):
    """Collate of ``(image, target)`` items: ``(list of images, list of targets)``."""
    return [item[0] for item in batch], [item[1] for item in batch]


def num_classes_of(detector: nn.Module) -> int:
    """Object classes of a torchvision two-stage detector (its box predictor's outputs, background excluded)."""
    predictor = getattr(getattr(detector, "roi_heads", None), "box_predictor", None)
    cls_score = getattr(predictor, "cls_score", None)
    if not isinstance(cls_score, nn.Linear):
        raise ValueError(f"{type(detector).__name__} has no roi_heads.box_predictor.cls_score: pass class_names")
    return cls_score.out_features - 1


def _batches(data, batch_size: int, num_workers: int):
    """``(images, targets)`` batches: a map-style dataset of items is read in order; an iterable of
    ``(images, targets)`` batches (a DataLoader with ``imagenet52p.voc.collate``) is used as it is."""
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, DataLoader):
        if len(data) == 0:
            raise ValueError("the evaluation dataset is empty: nothing to evaluate")
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_pairs), \
            len(data)
    inner = getattr(data, "dataset", None)
    return data, (len(inner) if hasattr(inner, "__len__") else None)


def evaluate_detector(detector: nn.Module, dataset_or_loader, device=None, batch_size: int = 1,
                      progress: bool = False, class_names=None, num_workers: int = 0) -> dict:
    """VOC07 (11-point) and VOC2010+ (area) mAP and per-class AP of ``detector`` on a split.

    Returns ``{"map07", "map10", "ap07": {class: AP or None}, "ap10": {...}, "n_positives": {class: count},
    "images"}``; a class without positives has AP None and is left out of the mean (``map*`` None when no
    class has positives).  ``class_names``: label ``k`` is ``class_names[k - 1]`` (default
    ``class1..classK`` for the detector's ``K`` classes).  The detector is moved to ``device`` (default: where
    it is) and its train/eval mode is restored after; the global RNGs are left as they were.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer (images per forward)")
    if class_names is None:
        class_names = default_class_names(num_classes_of(detector))
    dev = next(detector.parameters()).device if device is None else device
    runtime = Runtime.create(str(dev), amp=True, channels_last=False)
    detector.to(runtime.device)
    acc = DetectionAccumulator(class_names)
    loader, total = _batches(dataset_or_loader, batch_size, num_workers)
    bar = progress_bar(total, "detector evaluation", progress, unit="img")
    with rng_preserved(), eval_mode(detector), torch.inference_mode():
        for images, targets in loader:
            with runtime.autocast():
                out = detector([img.to(runtime.device, non_blocking=True) for img in images])
            dets = [{"boxes": d["boxes"].float().cpu(), "scores": d["scores"].float().cpu(),
                     "labels": d["labels"].cpu()} for d in out]
            gts = [{"boxes": t["boxes"], "labels": t["labels"],
                    "difficult": t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))}
                   for t in targets]
            acc.add(dets, gts)
            bar.update(len(images))
    bar.close()
    if len(acc) == 0:
        raise ValueError("the evaluation data yielded no images: nothing to evaluate")
    res = acc.compute_all()
    v07, v10 = res["voc07"], res["voc10"]
    log.info("evaluated %d images: mAP07 %s, mAP10 %s", len(acc), v07["map"], v10["map"])
    return {"map07": v07["map"], "map10": v10["map"], "ap07": v07["ap"], "ap10": v10["ap"],
            "n_positives": v07["n_positives"], "images": len(acc)}
