"""pruning.detection.speed on real torchvision detectors (tiny preset): GFLOPs at a fixed input and proposal
count, interleaved fps with a per-stage breakdown, speedup reports, and scripts/bench_detect.py --smoke run
as a subprocess.  No timing outcome is asserted: only that times exist, are positive and are consistent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pruning
from pruning.detection import speed
from pruning.detection.model import backbone_layers, make_detector

ROOT = Path(__file__).resolve().parents[2]
IMAGE = (96, 128)  # the tiny preset (shorter side 128, longer <= 192) resizes it to 128x170, pads to 128x192


def _tiny(seed=0):
    return make_detector("tinyvgg", preset="tiny", seed=seed)


def _random_plan(detector, ratio, seed):
    modules = dict(detector.named_modules())
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(modules[n].out_channels, generator=gen) for n in backbone_layers(detector)}
    return pruning.select_filters(scores, ratio)


def _pruned(ratio, seed=0):
    detector = _tiny()
    return pruning.apply_plan(detector, _random_plan(detector, ratio, seed))


def _first(module, kind):
    return next(m for m in module.modules() if isinstance(m, kind))


def test_cost_is_a_function_of_the_architecture_at_a_fixed_input_and_proposal_count():
    a, b = speed.detector_cost(_tiny(0), IMAGE, resize=True), speed.detector_cost(_tiny(1), IMAGE, resize=True)
    assert a == b  # two random inits: same numbers
    assert speed.detector_cost(_pruned(0.5, seed=1)) == speed.detector_cost(_pruned(0.5, seed=2))  # other filters kept
    assert a["image_size"] == list(IMAGE) and a["input_size"] == [128, 192] and a["proposals"] == 300
    assert a["macs"] == sum(s["macs"] for s in a["stages"].values()) > 0
    assert a["gflops"] == 2 * a["macs"] / 1e9
    assert all(s["gflops"] == 2 * s["macs"] / 1e9 for s in a["stages"].values())
    assert a["params"] == pruning.count_params(_tiny())


def test_cost_parts_equal_count_cost_of_the_backbone_and_proposals_times_one_roi():
    detector = _tiny()
    cost = speed.detector_cost(detector, IMAGE, proposals=300, resize=True)
    one = speed.detector_cost(detector, IMAGE, proposals=1, resize=True)
    assert speed.post_transform_size(detector, IMAGE) == {"resized": [128, 170], "input": [128, 192]}
    assert cost["stages"]["backbone"]["macs"] == pruning.count_cost(detector.backbone, (3, 128, 192))["macs"]
    assert cost["stages"]["roi_heads"]["macs"] == 300 * one["stages"]["roi_heads"]["macs"] > 0
    assert cost["stages"]["rpn"] == one["stages"]["rpn"] and cost["feature_size"] == [16, 24]  # stride 8
    direct = speed.detector_cost(detector, (128, 192))  # the default: the post-transform size given directly
    assert direct["input_size"] == [128, 192] and direct["stages"]["backbone"] == cost["stages"]["backbone"]
    assert speed.detector_cost(detector)["input_size"] == [600, 1000]  # whatever the preset's resize rule


def test_cost_drops_after_pruning_as_each_stage_predicts():
    base, pruned = _tiny(), _pruned(0.5)
    b, p = speed.detector_cost(base, IMAGE, resize=True), speed.detector_cost(pruned, IMAGE, resize=True)
    assert p["input_size"] == b["input_size"] and p["feature_size"] == b["feature_size"]
    assert p["stages"]["backbone"]["macs"] == pruning.count_cost(pruned.backbone, (3, *p["input_size"]))["macs"]
    c_base, c_pruned = base.backbone.out_channels, _first(pruned.rpn.head, nn.Conv2d).in_channels
    assert c_pruned == [m for m in pruned.backbone if isinstance(m, nn.Conv2d)][-1].out_channels < c_base
    rpn_conv = _first(pruned.rpn.head, nn.Conv2d)  # 3x3, its input follows conv5-3, its output does not
    h, w = b["feature_size"]
    rpn_drop = 9 * (c_base - c_pruned) * rpn_conv.out_channels * h * w
    assert p["stages"]["rpn"]["macs"] == b["stages"]["rpn"]["macs"] - rpn_drop
    fc6 = _first(pruned.roi_heads.box_head, nn.Linear)  # fc6 takes C x s x s: only its input shrinks
    roi_drop = 300 * (c_base - c_pruned) * pruned.roi_size ** 2 * fc6.out_features
    assert p["stages"]["roi_heads"]["macs"] == b["stages"]["roi_heads"]["macs"] - roi_drop
    assert 0 < p["macs"] < b["macs"]


def test_measure_fps_interleaves_rotated_rounds_and_times_every_stage():
    detectors = {"unpruned": _tiny(), "25%": _pruned(0.25), "50%": _pruned(0.5)}
    detectors["unpruned"].eval()
    detectors["50%"].train()  # each detector's mode comes back after the measurement
    calls, handles = [], []
    for name, d in detectors.items():
        handles.append(d.register_forward_pre_hook(lambda *_, name=name: calls.append(name)))
    hooks_before = {n: (len(d._forward_hooks), len(d.backbone._forward_hooks)) for n, d in detectors.items()}
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 80, generator=gen), torch.rand(3, 80, 64, generator=gen)]
    r = speed.measure_fps(detectors, images, "cpu", warmup=1, repeats=2)
    for h in handles:
        h.remove()
    names = list(detectors)
    assert r["rounds"] == 4 and r["images"] == 2 and r["batch_size"] == 1 and r["image_sizes"] == [[64, 80], [80, 64]]
    assert r["order"] == [names, names[1:] + names[:1], names[2:] + names[:2], names]
    flat = [n for order in r["order"] for n in order]
    assert calls == names + flat + flat  # warm-up round, timed rounds, breakdown rounds: detectors in turn
    assert r["device"] == pruning.cost.device_name("cpu") and r["dtype"] == "float32" and not r["autocast"]
    for name, m in r["models"].items():
        assert len(m["times_ms"]) == 4 and min(m["times_ms"]) > 0
        assert m["p10_ms"] <= m["median_ms"] <= m["p90_ms"] and m["fps"] == pytest.approx(1e3 / m["median_ms"])
        assert set(m["breakdown"]) == set(speed.STAGES)
        assert all(s["median_ms"] > 0 for s in m["breakdown"].values()), name
        assert m["breakdown_total_ms"] > 0 and m["detections_mean"] >= 0 and 0 < m["proposals_mean"] <= 100
        assert m["breakdown_overhead_ms"] == pytest.approx(m["breakdown_total_ms"] - m["median_ms"])
    assert detectors["50%"].training and not detectors["unpruned"].training
    assert {n: (len(d._forward_hooks), len(d.backbone._forward_hooks)) for n, d in detectors.items()} == hooks_before


def test_measure_fps_without_breakdown_and_bad_arguments():
    r = speed.measure_fps({"a": _tiny()}, [torch.rand(3, 48, 64)], warmup=0, repeats=1, breakdown=False)
    assert "breakdown" not in r["models"]["a"] and len(r["models"]["a"]["times_ms"]) == 1
    with pytest.raises(ValueError, match="dtype='int8'; choose one of"):
        speed.measure_fps({"a": _tiny()}, [torch.rand(3, 48, 64)], dtype="int8")
    with pytest.raises(ValueError, match=r"detectors\['m'\] must be a torchvision GeneralizedRCNN"):
        speed.measure_fps({"m": nn.Linear(2, 2)}, [torch.rand(3, 48, 64)])
    with pytest.raises(ValueError, match=r"images\[0\] must be a \(3, H, W\) float tensor"):
        speed.measure_fps({"a": _tiny()}, [torch.zeros(48, 64)])
    with pytest.raises(ValueError, match="proposals must be an int >= 1"):
        speed.detector_cost(_tiny(), IMAGE, proposals=0)


def test_speedup_report_follows_its_definitions():
    base = {"gflops": 4.0, "median_ms": 20.0, "times_ms": [20.0, 30.0, 10.0]}
    pruned = {"gflops": 2.0, "median_ms": 16.0, "times_ms": [10.0, 20.0, 10.0]}
    r = speed.speedup_report(base, pruned)
    assert r["predicted"] == 2.0 and r["measured"] == 1.25 and r["efficiency"] == 0.625
    assert r["gflops_reduction"] == 0.5 and r["fps_base"] == 50.0 and r["fps_pruned"] == 62.5
    assert r["measured_paired"] == 1.5  # median of 2.0, 1.5, 1.0
    with pytest.raises(ValueError, match=r"pruned lacks \['median_ms'\]"):
        speed.speedup_report(base, {"gflops": 2.0})


def test_bench_detect_smoke_runs_as_a_subprocess_and_writes_its_json(tmp_path):
    out = tmp_path / "detect.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_detect.py"), "--smoke", "--threads", "1",
                           "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    rows = {row["model"]: row for row in r["models"]}
    assert list(rows) == ["unpruned", "25%", "50%", "75%"] and r["arch"] == "tinyvgg" and r["threads"] == 1
    reductions = [rows[n]["gflops_reduction_600x1000"] for n in rows]
    assert reductions[0] == 0 and reductions == sorted(reductions) and reductions[-1] < 1
    assert set(r["fps"]["models"]) == set(rows) and r["fps"]["order"][0] == list(rows)
    for name, row in rows.items():
        assert "error" not in row and row["fps"] > 0 and row["input_size"] == [128, 192]
        assert row["detections_mean"] == 100  # box_score_thresh 0: the same post-processing work for every model
        assert all(row[f"{k}_img_s_b{b}"] > 0 for k in ("train", "eval") for b in (1, 2))
        if name != "unpruned":
            assert row["predicted"] == pytest.approx(rows["unpruned"]["gflops"] / row["gflops"])
            assert row["efficiency"] == pytest.approx(row["measured"] / row["predicted"])
    assert r["target"]["pass"] is None and "not evaluated on CPU" in r["target"]["note"]
    assert "target (GPU, 50%, batch 1)" in proc.stdout and "unpruned" in proc.stdout
