"""The VOC detection metric (pruning.detection.metric, docs/voc-metric.md): against torchmetrics/pycocotools on
difficult-free data, against a transcription of py-faster-rcnn's voc_eval.py with difficult objects, and on
hand-built cases that pin the devkit's rules."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning.detection import metric
from pruning.detection.metric import DetectionAccumulator, evaluate_detections, iou_matrix, voc_ap

NAMES = ("cat", "dog", "car", "bus", "person")
GRID = 16.0  # coordinates are multiples of 1/GRID below 1000: exact in float32, so every IoU is exact


def _img(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=np.float32), "labels": np.asarray(labels, dtype=np.int64)}


def _gt(boxes, labels, difficult=None):
    out = {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}
    if difficult is not None:
        out["difficult"] = np.asarray(difficult, dtype=bool)
    return out


def _q(x):
    return np.round(np.asarray(x, dtype=np.float64) * GRID) / GRID


def random_data(seed, n_images=80, n_classes=len(NAMES), p_difficult=0.0, tied_scores=False):
    """Images with 0-6 objects, each in its own 100x100 cell of a 4x4 grid (so objects never overlap and a
    detection has IoU >= 0.5 with at most one of them); detections: jittered copies of objects (misses,
    duplicates, wrong labels), and background boxes.  No IoU lies within 1e-3 of 0.5."""
    rng = np.random.default_rng(seed)
    dets, gts, prior = [], [], []
    for _ in range(n_images):
        cells = rng.permutation(16)[: rng.integers(0, 7)]
        boxes, labels = [], []
        for c in cells:
            x0, y0 = 100.0 * (c % 4) + 10, 100.0 * (c // 4) + 10
            w, h = rng.uniform(20, 80, size=2)
            boxes.append(_q([x0, y0, x0 + w, y0 + h]))
            labels.append(int(rng.integers(1, n_classes + 1)))
        boxes = np.array(boxes).reshape(-1, 4)
        diff = rng.random(len(boxes)) < p_difficult
        d_boxes, d_labels = [], []
        for b, lab in zip(boxes, labels):
            for _ in range(rng.choice(3, p=[0.25, 0.5, 0.25])):  # miss, one hit, a duplicate
                d_boxes.append(_jitter(rng, b, boxes, prior))
                d_labels.append(lab if rng.random() < 0.85 else int(rng.integers(1, n_classes + 1)))
        for _ in range(rng.integers(0, 4)):  # background
            x, y = rng.uniform(0, 400, size=2)
            d_boxes.append(_jitter(rng, _q([x, y, x + 30, y + 40]), boxes, prior))
            prior[-1] = 0.0
            d_labels.append(int(rng.integers(1, n_classes + 1)))
        dets.append(_img(np.array(d_boxes).reshape(-1, 4), np.zeros(len(d_boxes)), d_labels))
        gts.append(_gt(boxes, labels, diff))
    n = len(prior)  # distinct scores, the better detections mostly higher
    scores = (np.argsort(np.argsort(np.array(prior) + rng.random(n))) + 1.0) / (n + 1.0)
    if tied_scores:
        scores = np.round(scores * 8) / 8  # many ties, across and within images
    start = 0
    for d in dets:
        k = len(d["labels"])
        d["scores"] = scores[start:start + k].astype(np.float32)
        start += k
    return dets, gts


def _jitter(rng, box, objects, prior):
    for _ in range(100):
        scale = rng.choice([0.05, 0.15, 0.35])
        prior.append(0.8 - 2 * scale)
        w, h = box[2] - box[0], box[3] - box[1]
        d = _q(box + rng.normal(0, scale, size=4) * np.array([w, h, w, h]))
        d[2:] = np.maximum(d[2:], d[:2] + 1)
        if len(objects) == 0 or np.abs(iou_matrix(d[None], objects) - 0.5).min() > 1e-3:
            return d
        prior.pop()
    raise RuntimeError("no jitter away from IoU 0.5")


# ---------------------------------------------------------------- the COCO oracle (difficult-free data)

BACKENDS = ["pycocotools"] + (["faster_coco_eval"] if importlib.util.find_spec("faster_coco_eval") else [])


def test_the_11_point_thresholds_are_matlabs_0_to_1_by_0_1():
    """MATLAB's colon is symmetric (first half a + k*d, second half b - k*d from the end); written out by hand."""
    from pruning.detection.metric import matlab_colon
    assert list(matlab_colon(0.0, 0.1, 1.0)) == [0, .1, .2, 3 * .1, .4, .5, 1 - .4, 1 - 3 * .1, 1 - .2, 1 - .1, 1]
    assert matlab_colon(0.0, 0.1, 1.0)[3] != 0.3 and matlab_colon(0.0, 0.1, 1.0)[6] == 0.6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed,n_classes", [(0, 5), (1, 3), (2, 5)])
def test_voc07_equals_torchmetrics_coco_at_iou_05_and_11_recall_points(backend, seed, n_classes):
    from torchmetrics.detection import MeanAveragePrecision  # the test extra's oracle: a hard dependency

    dets, gts = random_data(seed, n_images=90, n_classes=n_classes)
    assert max(np.bincount(d["labels"], minlength=1).max(initial=0) for d in dets) <= 100  # COCO's maxDets
    assert sum(len(g["labels"]) for g in gts) > 50 and sum(len(d["labels"]) for d in dets) > 80
    oracle = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", iou_thresholds=[0.5],
                                  rec_thresholds=[k / 10 for k in range(11)], max_detection_thresholds=[1, 10, 100],
                                  class_metrics=True, backend=backend)
    as_t = lambda d: {k: torch.from_numpy(np.asarray(v)) for k, v in d.items()}  # noqa: E731
    oracle.update([as_t(d) for d in dets], [as_t(g) for g in gts])
    want = oracle.compute()
    got = evaluate_detections(dets, gts, class_names=NAMES[:n_classes], use_07_metric=True)
    per_class = dict(zip(want["classes"].tolist(), want["map_per_class"].tolist()))
    assert set(per_class) == set(range(1, n_classes + 1))
    for label, name in enumerate(NAMES[:n_classes], start=1):
        assert got["ap"][name] == pytest.approx(per_class[label], abs=1e-6), name
    assert 0.25 < got["map"] < 0.9  # a non-trivial mix of hits, misses and duplicates
    assert got["map"] == pytest.approx(float(want["map"]), abs=1e-6)


# ---------------------------------------------------------------- py-faster-rcnn's voc_eval.py, transcribed

def voc_eval_transcribed(dets, gts, classname, label, ovthresh=0.5, use_07_metric=True):
    """lib/datasets/voc_eval.py's voc_eval() (rbgirshick/py-faster-rcnn), on in-memory records instead of
    files, with the devkit's inclusive pixel boxes (xmin = x1 + 1, xmax = x2) and its +1 IoU.  Four changes,
    each marked CHANGED: ``ovmax >= ovthresh`` (VOCevaldet.m; the port has ``>``); a stable sort (MATLAB's
    ``sort``; the port's ``np.argsort`` is a quicksort); precision guarded when the first detections all
    match difficult objects (Detectron's fix; the port divides 0 by 0); 11-point thresholds as the devkit's MATLAB
    ``0:0.1:1`` (the port's ``np.arange(0., 1.1, 0.1)`` holds 0.6000000000000001 and 0.7000000000000001)."""
    recs = {}
    for i, g in enumerate(gts):
        b = np.asarray(g["boxes"], dtype=np.float64)
        recs[i] = [{"name": NAMES[lab - 1], "difficult": int(dif),
                    "bbox": [bb[0] + 1, bb[1] + 1, bb[2], bb[3]]}
                   for bb, lab, dif in zip(b, g["labels"], g["difficult"])]
    class_recs, npos = {}, 0
    for imagename in recs:
        R = [obj for obj in recs[imagename] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R])
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}
    # the results file: one line per detection, image order then the detector's order
    lines = [(i, float(s), [b[0] + 1, b[1] + 1, b[2], b[3]])
             for i, d in enumerate(dets) for b, s, lab in zip(np.asarray(d["boxes"], np.float64), d["scores"],
                                                              d["labels"]) if lab == label]
    image_ids = [x[0] for x in lines]
    confidence = np.array([x[1] for x in lines])
    BB = np.array([x[2] for x in lines]).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")  # CHANGED: stable, as MATLAB's sort
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1., 0.)
            ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) +
                   (BBGT[:, 2] - BBGT[:, 0] + 1.) * (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax >= ovthresh:  # CHANGED: >= (VOCevaldet.m), the port has >
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)  # CHANGED: no 0/0
    if use_07_metric:
        ap = 0.
        for t in [0, .1, .2, 3 * .1, .4, .5, 1 - .4, 1 - 3 * .1, 1 - .2, 1 - .1, 1]:  # CHANGED: MATLAB's 0:0.1:1
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.
        return ap
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


@pytest.mark.parametrize("seed,tied", [(10, False), (11, True), (12, True)])
def test_equals_transcribed_voc_eval_with_difficult_objects_and_ties(seed, tied):
    dets, gts = random_data(seed, n_images=120, p_difficult=0.3, tied_scores=tied)
    # overlapping same-class objects too: copy each image's first object, shifted, as a second object
    for g in gts[::3]:
        if len(g["labels"]):
            b = g["boxes"][0] + np.float32(6)
            g["boxes"] = np.vstack([g["boxes"], b[None]])
            g["labels"] = np.append(g["labels"], g["labels"][0])
            g["difficult"] = np.append(g["difficult"], False)
    assert sum(g["difficult"].sum() for g in gts) > 40
    acc = DetectionAccumulator(NAMES)
    acc.add(dets, gts)
    both = acc.compute_all()
    for use_07, key in [(True, "voc07"), (False, "voc10")]:
        for label, name in enumerate(NAMES, start=1):
            want = voc_eval_transcribed(dets, gts, name, label, use_07_metric=use_07)
            assert both[key]["ap"][name] == pytest.approx(want, abs=1e-12, rel=0), (key, name)


# ---------------------------------------------------------------- hand-built cases

def test_ap_definitions_on_a_hand_computed_pr_curve():
    # 5 positives; detections in score order: TP FP TP TP FP TP (one object missed)
    # recall    .2  .2  .4  .6  .6  .8
    # precision 1  1/2 2/3 3/4 3/5 2/3
    # VOC07: t=0,.1,.2 -> 1; t=.3,.4,.5,.6 -> 3/4 (recall .6 reaches t=.6); t=.7,.8 -> 2/3; t=.9,1 -> 0
    #        (3 + 3 + 4/3) / 11 = 2/3
    # VOC10: envelope 1, 3/4, 3/4, 3/4, 2/3, 2/3 -> .2*1 + .2*3/4 + .2*3/4 + .2*2/3 = 19/30
    rec = [0.2, 0.2, 0.4, 0.6, 0.6, 0.8]
    prec = [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5, 2 / 3]
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(2 / 3, abs=1e-12)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(19 / 30, abs=1e-12)
    # the same curve through evaluate_detections: one object per image, image 5 missed
    gts = [_gt([[0, 0, 10, 10]], [1]) for _ in range(5)] + [_gt([], [])]
    hit, miss = [0, 0, 10, 10], [50, 50, 60, 60]
    dets = [_img([hit, miss], [0.9, 0.8], [1, 1]), _img([hit], [0.7], [1]), _img([hit, miss], [0.6, 0.5], [1, 1]),
            _img([hit], [0.4], [1]), _img([], [], []), _img([], [], [])]
    got = evaluate_detections(dets, gts, class_names=["a"], use_07_metric=True, return_curves=True)
    assert got["recall"]["a"] == pytest.approx(rec) and got["precision"]["a"] == pytest.approx(prec)
    assert got["ap"]["a"] == pytest.approx(2 / 3, abs=1e-12) and got["map"] == got["ap"]["a"]
    got10 = evaluate_detections(dets, gts, class_names=["a"], use_07_metric=False)
    assert got10["ap"]["a"] == pytest.approx(19 / 30, abs=1e-12) and got10["metric"] == "voc10"
    assert got["n_positives"] == {"a": 5} and got["n_detections"] == {"a": 6}
    # the devkit's MATLAB thresholds 0:0.1:1: its t = 0.3 is 3*0.1 = 0.30000000000000004, which a recall of
    # exactly 3/10 does not reach (t = 0, 0.1, 0.2 count: 3/11); its 0.6 and 0.7 are the doubles nearest, which
    # recalls of exactly 6/10 and 7/10 do reach (np.arange's 0.6000000000000001 and 0.7000000000000001 would not)
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(3 / 11, abs=1e-15)
    assert voc_ap([0.6], [1.0], use_07_metric=True) == pytest.approx(7 / 11, abs=1e-15)
    assert voc_ap([0.7], [1.0], use_07_metric=True) == pytest.approx(8 / 11, abs=1e-15)
    assert voc_ap([], [], True) == 0.0 and voc_ap([], [], False) == 0.0


def test_a_detection_of_a_difficult_object_is_ignored_and_difficult_objects_are_not_positives():
    gts = [_gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1], [False, True])]
    on_difficult, on_easy, background = [20, 0, 30, 10], [0, 0, 10, 10], [50, 50, 60, 60]
    dets = [_img([on_difficult, on_easy, background], [0.9, 0.8, 0.7], [1, 1, 1])]
    without = [_img([on_easy, background], [0.8, 0.7], [1, 1])]
    for use_07 in (True, False):
        got = evaluate_detections(dets, gts, ["a"], use_07_metric=use_07, return_curves=True)
        ref = evaluate_detections(without, gts, ["a"], use_07_metric=use_07, return_curves=True)
        assert got["ap"] == ref["ap"] == {"a": 1.0}  # as an FP it would give precision 1/2 at recall 1
        assert got["recall"] == ref["recall"] and got["precision"] == ref["precision"] == {"a": [1.0, 0.5]}
        assert got["n_positives"] == {"a": 1} and got["n_detections"] == {"a": 3}
    # a class whose only objects are difficult has no positives: AP None, left out of the mAP
    gts = [_gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 2], [False, True])]
    dets = [_img([[0, 0, 10, 10], [20, 0, 30, 10], background], [0.9, 0.8, 0.7], [1, 2, 2])]
    got = evaluate_detections(dets, gts, ["a", "b"])
    assert got["ap"] == {"a": 1.0, "b": None} and got["map"] == 1.0 and got["n_positives"] == {"a": 1, "b": 0}
    assert got["n_detections"] == {"a": 1, "b": 2}


def test_a_repeated_detection_is_a_false_positive_even_when_it_overlaps_another_free_object():
    # objects A (0,0,10,10) and B (4,0,14,10) of one class; d1 = A (score .9) -> TP on A.
    # d2 = (1,0,11,10): IoU with A = 90/110 = .818, with B = 70/130 = .538 >= .5, but VOC takes the max (A,
    # already detected) -> FP (COCO would match it to B).  recall .5 .5, precision 1 1/2
    # VOC07: t=0..0.5 -> 1 (6 points), t>.5 -> 0: 6/11.  VOC10: .5 * 1 = 1/2
    gts = [_gt([[0, 0, 10, 10], [4, 0, 14, 10]], [1, 1])]
    dets = [_img([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [1, 1])]
    assert iou_matrix(dets[0]["boxes"][1:], gts[0]["boxes"]) == pytest.approx(np.array([[90 / 110, 70 / 130]]))
    assert evaluate_detections(dets, gts, ["a"], use_07_metric=True)["ap"]["a"] == pytest.approx(6 / 11)
    assert evaluate_detections(dets, gts, ["a"], use_07_metric=False)["ap"]["a"] == pytest.approx(0.5)
    # TP, duplicate FP, TP on the other object: recall .5 .5 1, precision 1 1/2 2/3
    # VOC07: 6 * 1 + 5 * 2/3 = 28/3 -> 28/33.  VOC10: envelope 1, 2/3, 2/3 -> .5 * 1 + .5 * 2/3 = 5/6
    gts = [_gt([[0, 0, 10, 10], [40, 0, 50, 10]], [1, 1])]
    dets = [_img([[0, 0, 10, 10], [1, 0, 11, 10], [40, 0, 50, 10]], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert evaluate_detections(dets, gts, ["a"], use_07_metric=True)["ap"]["a"] == pytest.approx(28 / 33)
    assert evaluate_detections(dets, gts, ["a"], use_07_metric=False)["ap"]["a"] == pytest.approx(5 / 6)


def test_iou_exactly_at_the_threshold_matches_and_just_below_does_not():
    gts = [_gt([[0, 0, 10, 10]], [1])]
    at, below = [[0, 0, 10, 5]], [[0, 0, 10, 4.999]]
    assert iou_matrix(np.array(at, dtype=np.float32), gts[0]["boxes"])[0, 0] == 0.5  # 50 / 100, exact
    assert evaluate_detections([_img(at, [0.5], [1])], gts, ["a"])["ap"] == {"a": 1.0}
    assert evaluate_detections([_img(below, [0.5], [1])], gts, ["a"])["ap"] == {"a": 0.0}
    assert evaluate_detections([_img(below, [0.5], [1])], gts, ["a"], iou_threshold=0.4)["ap"] == {"a": 1.0}
    # the devkit convention: inclusive pixels 1..10 are x1=0, x2=10; 1..5 give 5 of 10 columns
    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)


def test_detections_are_matched_within_their_own_image_only_and_classes_without_objects_are_excluded():
    gts = [_gt([[0, 0, 10, 10]], [1]), _gt([], [])]
    dets = [_img([], [], []), _img([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 3])]
    got = evaluate_detections(dets, gts, ["a", "b", "c"])
    assert got["ap"] == {"a": 0.0, "b": None, "c": None} and got["map"] == 0.0
    assert got["n_positives"] == {"a": 1, "b": 0, "c": 0} and got["n_detections"] == {"a": 1, "b": 0, "c": 1}
    assert evaluate_detections(dets[1:], gts[1:], ["a", "b", "c"])["map"] is None  # no class has positives
    assert len(evaluate_detections([], [], None)["ap"]) == metric.DEFAULT_NUM_CLASSES
    assert list(evaluate_detections([], [], None)["ap"])[:2] == ["class1", "class2"]


def test_equal_scores_keep_the_given_order_image_order_then_within_image_order():
    # one object; a hit X and a background box Y with the same score: X first -> precision 1 at recall 1
    # (AP 1); Y first -> precision 0 then 1/2 at recall 1 (AP 1/2 in both metrics)
    gts = [_gt([[0, 0, 10, 10]], [1]), _gt([], [])]
    x, y = [0, 0, 10, 10], [50, 50, 60, 60]
    for use_07 in (True, False):
        ev = lambda d: evaluate_detections(d, gts, ["a"], use_07_metric=use_07)["ap"]["a"]  # noqa: E731
        assert ev([_img([x, y], [0.5, 0.5], [1, 1]), _img([], [], [])]) == 1.0
        assert ev([_img([y, x], [0.5, 0.5], [1, 1]), _img([], [], [])]) == pytest.approx(0.5)
        assert ev([_img([x], [0.5], [1]), _img([y], [0.5], [1])]) == 1.0
    # 20 detections in one image, scores .75 (odd positions) and .5 (even); positions 0 and 4 both hit the
    # object, the others are background.  Order: the 10 odd ones (FP), then 0 (TP), 2, 4 (repeated: FP), ...
    # -> the TP is 11th: precision 1/11 at recall 1, AP 1/11 in both metrics (were 4 taken first: 1/13)
    boxes = [x if i == 0 else [1, 0, 11, 10] if i == 4 else [50 + 20 * i, 50, 60 + 20 * i, 60] for i in range(20)]
    many = [_img(boxes, [0.75 if i % 2 else 0.5 for i in range(20)], [1] * 20), _img([], [], [])]
    for use_07 in (True, False):
        assert evaluate_detections(many, gts, ["a"], use_07_metric=use_07)["ap"]["a"] == pytest.approx(1 / 11)
    # across images: image 0's detection comes first
    gts2 = [_gt([], []), _gt([[0, 0, 10, 10]], [1])]
    assert evaluate_detections([_img([y], [0.5], [1]), _img([x], [0.5], [1])], gts2, ["a"])["ap"]["a"] == \
        pytest.approx(0.5)


def test_result_does_not_depend_on_the_order_detections_are_given_in():
    dets, gts = random_data(3, n_images=60, p_difficult=0.2)  # distinct scores
    rng = np.random.default_rng(0)
    shuffled = []
    for d in dets:
        p = rng.permutation(len(d["labels"]))
        shuffled.append({k: v[p] for k, v in d.items()})
    order = rng.permutation(len(dets))
    for use_07 in (True, False):
        ref = evaluate_detections(dets, gts, NAMES, use_07_metric=use_07)
        assert evaluate_detections(shuffled, gts, NAMES, use_07_metric=use_07) == ref
        got = evaluate_detections([shuffled[i] for i in order], [gts[i] for i in order], NAMES, use_07_metric=use_07)
        assert got["ap"] == pytest.approx(ref["ap"], abs=1e-15) and got["n_positives"] == ref["n_positives"]


def test_accumulator_equals_one_shot_and_accepts_torch_tensors():
    dets, gts = random_data(4, n_images=50, p_difficult=0.2, tied_scores=True)
    acc = DetectionAccumulator(NAMES)
    for lo, hi in [(0, 7), (7, 8), (8, 8), (8, 31), (31, 50)]:
        batch = [{k: torch.from_numpy(np.asarray(v)) for k, v in d.items()} for d in dets[lo:hi]]
        acc.add(batch, [{k: torch.from_numpy(np.asarray(v)) for k, v in g.items()} for g in gts[lo:hi]])
    assert len(acc) == 50 and "50 images" in repr(acc)
    both = acc.compute_all(return_curves=True)
    assert both["voc07"] == evaluate_detections(dets, gts, NAMES, use_07_metric=True, return_curves=True)
    assert both["voc10"] == evaluate_detections(dets, gts, NAMES, use_07_metric=False, return_curves=True)
    assert acc.compute(use_07_metric=False) == evaluate_detections(dets, gts, NAMES, use_07_metric=False)
    assert both["voc07"]["map"] != both["voc10"]["map"]
    # half-precision tensors are widened, not refused
    half = [{k: (torch.from_numpy(np.asarray(v)).half() if k == "scores" else torch.from_numpy(np.asarray(v)))
             for k, v in d.items()} for d in dets]
    assert evaluate_detections(half, gts, NAMES)["n_detections"] == both["voc07"]["n_detections"]


def test_input_errors_name_the_image_and_key():
    ok_det, ok_gt = _img([[0, 0, 10, 10]], [0.5], [1]), _gt([[0, 0, 10, 10]], [1])
    acc = DetectionAccumulator(["a", "b"])
    acc.add([ok_det], [ok_gt])
    cases = [
        ([ok_det, dict(ok_det, labels=np.array([3]))], [ok_gt, ok_gt], r"detections\[1\].*key 'labels'.*1\.\.2"),
        ([ok_det, dict(ok_det, labels=np.array([0]))], [ok_gt, ok_gt], r"detections\[1\].*found 0"),
        ([ok_det], [dict(ok_gt, labels=np.array([5]))], r"targets\[0\].*key 'labels'"),
        ([dict(ok_det, boxes=np.zeros((1, 5)))], [ok_gt], r"detections\[0\].*key 'boxes'.*\(N, 4\)"),
        ([dict(ok_det, scores=np.zeros(2))], [ok_gt], r"detections\[0\].*key 'scores'.*expected 1"),
        ([ok_det], [dict(ok_gt, difficult=np.zeros(3, bool))], r"targets\[0\].*key 'difficult'"),
        ([ok_det], [dict(ok_gt, boxes=np.array([[10.0, 0, 0, 10]]))], r"targets\[0\].*key 'boxes'.*x2 < x1"),
        ([dict(ok_det, scores=np.array([np.nan]))], [ok_gt], r"detections\[0\].*key 'scores'.*non-finite"),
        ([{"boxes": ok_det["boxes"], "labels": ok_det["labels"]}], [ok_gt], r"detections\[0\].*: missing key 'scores'"),
        ([ok_det, ok_det], [ok_gt], r"2 detections and 1 targets"),
    ]
    for dets, gts, match in cases:
        with pytest.raises(ValueError, match=match):
            evaluate_detections(dets, gts, ["a", "b"])
        with pytest.raises(ValueError, match=match):
            acc.add(dets, gts)
    assert len(acc) == 1  # a refused batch adds nothing
    with pytest.raises(ValueError, match=r"detections\[1\] \(image 2 of the accumulator\), key 'labels'"):
        acc.add([ok_det, dict(ok_det, labels=np.array([7]))], [ok_gt, ok_gt])
    for bad, match in [(dict(iou_threshold=0.0), "iou_threshold"), (dict(class_names="abc"), "sequence"),
                       (dict(class_names=["a", "a"]), "distinct")]:
        with pytest.raises(ValueError, match=match):
            DetectionAccumulator(**bad)
    with pytest.raises(ValueError, match="equal length"):
        voc_ap([0.1, 0.2], [1.0], True)


def test_the_metric_module_imports_no_oracle():
    tree = ast.parse(Path(metric.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "typing", "numpy"}, imported
