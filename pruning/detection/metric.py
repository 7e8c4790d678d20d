"""The PASCAL VOC detection metric, exactly as the official devkit (``VOCevaldet.m``, ``VOCap.m``).

Full definitions, with the differences from py-faster-rcnn's ``voc_eval.py`` port: ``docs/voc-metric.md``.

**Boxes** are ``x1, y1, x2, y2`` in continuous pixel coordinates (INTERFACES): a VOC box with 1-based
inclusive pixels ``xmin..xmax`` is ``x1 = xmin - 1, x2 = xmax``, so ``x2 - x1`` is the devkit's
``xmax - xmin + 1`` and :func:`iou_matrix`, which adds no ``+1``, equals the devkit's overlap.

**Matching** (per class ``c``, :func:`evaluate_detections`).  The detections labelled ``c`` of all images
are sorted by descending score with a *stable* sort: equal scores keep the order they were given in
(image order, then the order inside the image), as MATLAB's stable ``sort`` does on a results file written
in that order.  Going down that list, a detection is compared with the ground-truth boxes of class ``c``
in *its* image; ``j`` is the one of maximum IoU (the first on ties) and ``o`` that IoU:

* ``o >= iou_threshold`` and ``j`` is difficult: the detection is *ignored* (neither TP nor FP);
* ``o >= iou_threshold`` and ``j`` not yet detected: true positive, ``j`` becomes detected;
* ``o >= iou_threshold`` and ``j`` already detected: false positive (a repeated detection);
* otherwise (``o`` below the threshold, or no box of class ``c`` in the image): false positive.

``P_c`` (positives) is the number of non-difficult ground-truth boxes of class ``c``.  Over the counted
(not ignored) detections, in sorted order, ``recall_k = TP_k / P_c`` and ``precision_k = TP_k / (TP_k +
FP_k)`` with cumulative counts; :func:`voc_ap` turns them into the AP.  A class with ``P_c = 0`` has AP
``None`` and is left out of ``map``, the mean of the other classes' APs (``None`` when no class has
positives).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_NUM_CLASSES = 20
_DET_KEYS, _GT_KEYS = ("boxes", "scores", "labels"), ("boxes", "labels")


def matlab_colon(a: float, d: float, b: float) -> np.ndarray:
    """The doubles MATLAB's ``a:d:b`` produces (its symmetric colon algorithm, for ``(b - a) / d`` a whole
    number ``n``): the first half ``a + k*d``, the second half ``b - k*d`` counted from the end, the centre
    ``(a + b) / 2`` when ``n`` is even.  ``0:0.1:1`` is ``0, 0.1, 0.2, 3*0.1 (= 0.30000000000000004), 0.4, 0.5,
    1-0.4, 1-3*0.1, 1-0.2, 1-0.1, 1``: the devkit's 11 recall thresholds (``VOCevaldet.m``: ``for
    t=0:0.1:1``)."""
    n = int(round((b - a) / d))
    out = np.empty(n + 1)
    for k in range(n // 2 + 1):
        out[k], out[n - k] = a + k * d, b - k * d
    if n % 2 == 0:
        out[n // 2] = (a + b) / 2
    return out


_RECALL_POINTS = matlab_colon(0.0, 0.1, 1.0)  # the devkit's t = 0:0.1:1, bit for bit


def default_class_names(num_classes: int = DEFAULT_NUM_CLASSES) -> Tuple[str, ...]:
    """``("class1", ..., "class<num_classes>")``: the names used when none are given (label ``k`` is
    ``"class<k>"``)."""
    return tuple(f"class{k}" for k in range(1, num_classes + 1))


def _check_class_names(class_names: Optional[Sequence[str]]) -> Tuple[str, ...]:
    if class_names is None:
        return default_class_names()
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a sequence of class names (label k = class_names[k-1]); "
                         f"got the string {class_names!r}")
    names = tuple(class_names)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"class_names must be non-empty, distinct, non-empty strings; got {list(names)!r}")
    return names


def _check_threshold(iou_threshold) -> float:
    t = float(iou_threshold)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1] (VOC uses 0.5); got {iou_threshold!r}")
    return t


def _as_numpy(x) -> np.ndarray:
    """A numpy copy of a torch tensor (any device; half/bfloat16 widened to float32), array or list."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        return x.numpy().copy()
    return np.array(x)


def _boxes(x, where: str) -> np.ndarray:
    b = _as_numpy(x)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or b.dtype.kind not in "biuf":
        raise ValueError(f"{where}: expected boxes of shape (N, 4) as x1, y1, x2, y2; found shape "
                         f"{tuple(b.shape)} dtype {b.dtype}")
    b = b.astype(np.float64)
    if not np.isfinite(b).all():
        raise ValueError(f"{where}: boxes have non-finite (NaN/inf) coordinates")
    bad = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
    if bad.size:
        raise ValueError(f"{where}: box {int(bad[0])} is {b[bad[0]].tolist()}, with x2 < x1 or y2 < y1; boxes "
                         "are x1, y1, x2, y2 (corners), not x, y, w, h")
    return b


def _vector(x, n: int, kind: str, where: str) -> np.ndarray:
    v = _as_numpy(x)
    if v.size == 0 and n == 0:
        v = v.reshape(0)
    if v.ndim != 1 or v.shape[0] != n or (v.size and v.dtype.kind not in "biuf"):
        raise ValueError(f"{where}: expected {n} numbers (one per box), found shape {tuple(v.shape)} "
                         f"dtype {v.dtype}")
    if kind == "score":
        v = v.astype(np.float64)
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: scores have non-finite (NaN/inf) values")
        return v
    if kind == "flag":
        if v.size and not np.isin(v, (0, 1)).all():
            raise ValueError(f"{where}: difficult flags must be booleans or 0/1; found {np.unique(v).tolist()}")
        return v.astype(bool)
    if v.size and not (np.isfinite(v).all() and (v == np.round(v)).all()):
        raise ValueError(f"{where}: labels must be integers; found {v.tolist()[:5]}...")
    return v.astype(np.int64)


def _labels(x, n: int, num_classes: int, where: str) -> np.ndarray:
    labels = _vector(x, n, "label", where)
    bad = labels[(labels < 1) | (labels > num_classes)]
    if bad.size:
        raise ValueError(f"{where}: labels must be 1..{num_classes} (0 is background, which is never a "
                         f"detection or an object); found {int(bad[0])}. Pass class_names with one name per "
                         "class if there are more classes")
    return labels


def _get(d, key: str, where: str, keys: Sequence[str]):
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a dict with keys {list(keys)}; found {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{where}: missing key {key!r}; expected keys {list(keys)} (found {sorted(map(str, d))})")
    return d[key]


def _image(det, tgt, i: int, offset: int, num_classes: int):
    """Validated numpy arrays of image ``i`` of a batch: ``(det boxes, scores, labels), (gt boxes, labels,
    difficult)``; ``offset`` images came before the batch (named in errors)."""
    note = f" (image {offset + i} of the accumulator)" if offset else ""
    dw, tw = f"detections[{i}]{note}", f"targets[{i}]{note}"
    boxes = _boxes(_get(det, "boxes", dw, _DET_KEYS), f"{dw}, key 'boxes'")
    scores = _vector(_get(det, "scores", dw, _DET_KEYS), len(boxes), "score", f"{dw}, key 'scores'")
    labels = _labels(_get(det, "labels", dw, _DET_KEYS), len(boxes), num_classes, f"{dw}, key 'labels'")
    gt_boxes = _boxes(_get(tgt, "boxes", tw, _GT_KEYS), f"{tw}, key 'boxes'")
    gt_labels = _labels(_get(tgt, "labels", tw, _GT_KEYS), len(gt_boxes), num_classes, f"{tw}, key 'labels'")
    difficult = tgt.get("difficult")
    if difficult is None:
        difficult = np.zeros(len(gt_boxes), dtype=bool)
    difficult = _vector(difficult, len(gt_boxes), "flag", f"{tw}, key 'difficult'")
    return (boxes, scores, labels), (gt_boxes, gt_labels, difficult)


def iou_matrix(det_boxes, gt_boxes) -> np.ndarray:
    """IoU of every detection with every ground-truth box: float64 array ``(K, G)``.

    ``IoU(a, b) = |a ∩ b| / (|a| + |b| - |a ∩ b|)`` with ``|a| = (x2 - x1)(y2 - y1)`` and
    ``|a ∩ b| = max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))``, on continuous boxes and with no
    ``+1``.  Because ``x1 = xmin - 1, x2 = xmax`` (module doc), ``x2 - x1 = xmax - xmin + 1``: this equals the
    devkit's overlap with its ``+1`` on inclusive pixels (exactly for integer pixel boxes, up to rounding of
    the ``- 1`` otherwise).  Pairs with a zero union (two empty boxes) have IoU 0.
    """
    a, b = _boxes(det_boxes, "det_boxes"), _boxes(gt_boxes, "gt_boxes")
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def voc_ap(recall, precision, use_07_metric: bool = True) -> float:
    """Average precision of one class from its cumulative ``recall`` and ``precision`` (same length, in
    descending-score order).

    ``use_07_metric=True`` (VOC2007, 11 points): ``AP = (1/11) * sum_{t in {0, 0.1, ..., 1}} p(t)`` with
    ``p(t) = max{precision_k : recall_k >= t}``, or 0 when no ``recall_k >= t``; the 11 ``t`` are the doubles
    of the devkit's MATLAB ``0:0.1:1`` (:func:`matlab_colon`): its ``t = 0.3`` is ``3*0.1 =
    0.30000000000000004``, so a recall of exactly 3/10 does not reach it, as in ``VOCevaldet.m``.

    ``use_07_metric=False`` (VOC2010+, ``VOCap.m``): with sentinels ``r = [0, recall, 1]`` and
    ``p = [0, precision, 0]``, the envelope ``e_i = max_{j >= i} p_j``, and
    ``AP = sum_{i : r_i != r_{i-1}} (r_i - r_{i-1}) * e_i``: the area under the monotone envelope.
    """
    r = np.asarray(_as_numpy(recall), dtype=np.float64).reshape(-1)
    p = np.asarray(_as_numpy(precision), dtype=np.float64).reshape(-1)
    if r.shape != p.shape or not (np.isfinite(r).all() and np.isfinite(p).all()):
        raise ValueError(f"recall and precision must be finite and of equal length; found {r.size} recall and "
                         f"{p.size} precision values")
    if use_07_metric:
        points = [p[r >= t].max() if (r >= t).any() else 0.0 for t in _RECALL_POINTS]
        return float(np.sum(points) / 11.0)
    mrec = np.concatenate(([0.0], r, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], p, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * envelope[steps]))


def _match_image(det, gt, iou_threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(tp, fp)``: boolean arrays over one image's detections (input order) by the devkit's rules (module
    doc); a detection with both False is ignored (it matched a difficult object).  ``det`` is
    ``(boxes, scores, labels)`` and ``gt`` is ``(boxes, labels, difficult)`` as validated numpy arrays.

    Only the detections of the same image compete for a ground-truth box, in the image's own stable
    descending-score order, which is the global order restricted to the image: so matching image by image
    equals the devkit's walk down the global list.
    """
    boxes, scores, labels = det
    gt_boxes, gt_labels, difficult = gt
    k = len(boxes)
    tp = np.zeros(k, dtype=bool)
    if k == 0 or len(gt_boxes) == 0:
        return tp, np.ones(k, dtype=bool)
    iou = np.where(labels[:, None] == gt_labels[None, :], iou_matrix(boxes, gt_boxes), -1.0)
    best, ovmax = iou.argmax(axis=1), iou.max(axis=1)
    hit = ovmax >= iou_threshold
    candidate = hit & ~difficult[best]
    order = np.argsort(-scores, kind="stable")
    ranked = order[candidate[order]]
    _, first = np.unique(best[ranked], return_index=True)
    tp[ranked[first]] = True
    return tp, ~hit | (candidate & ~tp)


class DetectionAccumulator:
    """Streams :func:`evaluate_detections`: ``add(detections, targets)`` per batch, then ``compute()``.

    ``add`` validates the whole batch (nothing is kept if one image is bad), copies it to CPU numpy and
    matches it at once (matching needs only the image itself); it keeps per detection its score, label and
    TP/FP flags, and per class the positives.  ``len(acc)`` is the number of images added.
    """

    def __init__(self, class_names: Optional[Sequence[str]] = None, iou_threshold: float = 0.5):
        self.class_names = _check_class_names(class_names)
        self.iou_threshold = _check_threshold(iou_threshold)
        self._scores: List[np.ndarray] = []
        self._labels: List[np.ndarray] = []
        self._tp: List[np.ndarray] = []
        self._fp: List[np.ndarray] = []
        self._positives = np.zeros(len(self.class_names), dtype=np.int64)
        self._images = 0

    def __len__(self) -> int:
        return self._images

    def __repr__(self) -> str:
        return (f"DetectionAccumulator({len(self.class_names)} classes, iou_threshold={self.iou_threshold}, "
                f"{self._images} images)")

    def add(self, detections: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        """Add one batch: per-image lists of dicts (INTERFACES): detections ``boxes``/``scores``/``labels``,
        targets ``boxes``/``labels``/optional ``difficult`` (default all False)."""
        detections, targets = list(detections), list(targets)
        if len(detections) != len(targets):
            raise ValueError(f"detections and targets must have one entry per image; got {len(detections)} "
                             f"detections and {len(targets)} targets")
        n = len(self.class_names)
        images = [_image(det, tgt, i, self._images, n) for i, (det, tgt) in enumerate(zip(detections, targets))]
        for det, gt in images:
            tp, fp = _match_image(det, gt, self.iou_threshold)
            self._scores.append(det[1])
            self._labels.append(det[2])
            self._tp.append(tp)
            self._fp.append(fp)
            self._positives += np.bincount(gt[1][~gt[2]] - 1, minlength=n)
        self._images += len(images)

    def _curves(self) -> Dict[str, Optional[Tuple[np.ndarray, np.ndarray]]]:
        """Per class ``(recall, precision)`` over its counted detections, or None when it has no positives."""
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))
        scores, labels = cat(self._scores, np.float64), cat(self._labels, np.int64)
        tp, fp = cat(self._tp, bool), cat(self._fp, bool)
        curves = {}
        for c, name in enumerate(self.class_names, start=1):
            npos = int(self._positives[c - 1])
            if npos == 0:
                curves[name] = None
                continue
            mask = labels == c
            order = np.argsort(-scores[mask], kind="stable")
            tp_c, fp_c = tp[mask][order], fp[mask][order]
            counted = tp_c | fp_c
            ctp = np.cumsum(tp_c[counted], dtype=np.float64)
            cfp = np.cumsum(fp_c[counted], dtype=np.float64)
            curves[name] = (ctp / npos, ctp / (ctp + cfp))
        return curves

    def _result(self, curves, use_07_metric: bool, return_curves: bool) -> dict:
        ap = {name: (None if cv is None else voc_ap(cv[0], cv[1], use_07_metric)) for name, cv in curves.items()}
        valid = [v for v in ap.values() if v is not None]
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)
        counts = np.bincount(labels - 1, minlength=len(self.class_names)) if labels.size else \
            np.zeros(len(self.class_names), dtype=np.int64)
        out = {"metric": "voc07" if use_07_metric else "voc10", "iou_threshold": self.iou_threshold,
               "map": float(np.mean(valid)) if valid else None, "ap": ap,
               "n_positives": {name: int(v) for name, v in zip(self.class_names, self._positives)},
               "n_detections": {name: int(v) for name, v in zip(self.class_names, counts)},
               "n_images": self._images}
        if return_curves:
            out["recall"] = {n: (None if cv is None else cv[0].tolist()) for n, cv in curves.items()}
            out["precision"] = {n: (None if cv is None else cv[1].tolist()) for n, cv in curves.items()}
        return out

    def compute(self, use_07_metric: bool = True, return_curves: bool = False) -> dict:
        """The result dict of :func:`evaluate_detections` over every image added so far."""
        return self._result(self._curves(), bool(use_07_metric), return_curves)

    def compute_all(self, return_curves: bool = False) -> Dict[str, dict]:
        """``{"voc07": compute(True), "voc10": compute(False)}`` from one matching pass."""
        curves = self._curves()
        return {"voc07": self._result(curves, True, return_curves),
                "voc10": self._result(curves, False, return_curves)}


def evaluate_detections(detections: Sequence[Mapping], targets: Sequence[Mapping],
                        class_names: Optional[Sequence[str]] = None, iou_threshold: float = 0.5,
                        use_07_metric: bool = True, return_curves: bool = False) -> dict:
    """VOC AP per class and mAP of ``detections`` against ``targets`` (one dict per image each; module doc).

    ``class_names``: label ``k`` is ``class_names[k - 1]`` (default ``class1..class20``; pass the VOC names
    to get them as keys).  Returns ``{"metric": "voc07" | "voc10", "iou_threshold", "map", "ap": {class: AP
    or None}, "n_positives": {class: non-difficult objects}, "n_detections": {class: detections, ignored ones
    included}, "n_images"}``, plus ``"recall"``/``"precision"`` ``{class: list}`` (over the counted
    detections, descending score) when ``return_curves``.  Bad input raises ``ValueError`` naming the image
    index and key.
    """
    acc = DetectionAccumulator(class_names, iou_threshold)
    acc.add(detections, targets)
    return acc.compute(use_07_metric, return_curves)
