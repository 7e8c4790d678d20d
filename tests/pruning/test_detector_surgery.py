"""Pruning a detector's backbone through its proxy (the RPN conv's and fc6's inputs follow the last conv;
frozen convs stay frozen), saving and loading detectors, and plugging in a pruned classification run's
model (tinyvgg, and VGG-16 with a 52-class head), all on real files.  The full-size VGG-16 detector and the
whole-detector-trace regression are in test_detector_model.py."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import pruning
from pruning.detection.io import (classifier_from_run, detector_from_run, load_detector, save_detector)
from pruning.detection.model import backbone_layers, detector_from_classifier, make_detector
from pruning.loop.models import TinyVGG, make_model, restrict_classifier


def _half(n: int, seed: int, ratio: float = 0.5) -> list:
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=gen)[: n - int(ratio * n)].tolist())


def _classifier_plan(model, ratio: float) -> dict:
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return {n: _half(m.out_channels, i, ratio) for i, (n, m) in enumerate(convs)}


def _detect(det, seed: int = 1, size=(3, 96, 120)):
    det.eval()
    with torch.no_grad():
        return det([torch.rand(*size, generator=torch.Generator().manual_seed(seed))])[0]


def _tiny_pruned(seed: int = 0):
    det = make_detector("tinyvgg", preset="tiny", seed=seed, frozen_convs=1, box_score_thresh=0.0)
    plan = {name: _half(det.get_submodule(name).out_channels, i) for i, name in enumerate(backbone_layers(det))}
    return pruning.apply_plan(det, plan), plan


def test_frozen_convs_stay_frozen_and_the_mode_is_kept_through_pruning():
    det, plan = _tiny_pruned()
    assert det.training
    first, second = (det.get_submodule(n) for n in backbone_layers(det)[:2])
    assert not first.weight.requires_grad and second.weight.requires_grad
    assert first.out_channels == len(plan["backbone.0"]) == 8
    assert det.rpn.head.conv[0][0].in_channels == 32 and det.rpn.head.conv[0][0].out_channels == 64
    assert det.roi_heads.box_head[0].in_features == 32 * 4


def test_save_and_load_round_trip(tmp_path):
    det, plan = _tiny_pruned()
    save_detector(det, tmp_path / "a")
    save_detector(_tiny_pruned()[0], tmp_path / "b")  # an equal detector, built and pruned again
    for name in ("detector.json", "plan.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    doc = json.loads((tmp_path / "a" / "detector.json").read_text())
    assert doc == {"format": "pruning-detector", "version": 1, "arch": "tinyvgg", "num_classes": 21,
                   "preset": "tiny", "overrides": {"box_score_thresh": 0.0, "frozen_convs": 1},
                   "classifier_num_classes": 1000}
    loaded = load_detector(tmp_path / "a")
    assert pruning.current_plan(loaded) == plan
    assert not loaded.get_submodule("backbone.0").weight.requires_grad
    expected, got = _detect(det), _detect(loaded)
    assert len(expected["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(expected[key], got[key])
    save_detector(loaded, tmp_path / "c")
    for name in ("detector.json", "plan.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def _classification_run(tmp_path, model, ratio: float, size: int):
    """A classification run's folder: ``run/model/{plan.json, state_dict.pt}`` as pruning.loop writes it."""
    pruning.apply_plan(model, _classifier_plan(model, ratio), torch.zeros(1, 3, size, size))
    pruning.save_pruned(model, None, tmp_path / "run" / "model")
    return tmp_path / "run"


def test_plug_in_a_pruned_tinyvgg_run(tmp_path):
    classifier = make_model("tinyvgg", 52, seed=0)
    run = _classification_run(tmp_path, classifier, 0.5, 32)
    kept = classifier.features[12].out_channels
    torch.manual_seed(0)
    det = detector_from_run(run, "tinyvgg", preset="tiny", box_score_thresh=0.0)  # the run folder
    again = detector_from_run(run / "model", "tinyvgg", preset="tiny")  # or its model/ folder
    assert det.classifier_num_classes == 52 and again.classifier_num_classes == 52
    assert det.roi_heads.box_head[0].in_features == kept * 4 == 128
    assert det.rpn.head.conv[0][0].in_channels == kept and det.rpn.head.conv[0][0].out_channels == 64
    assert torch.equal(det.get_submodule("backbone.12").weight, classifier.features[12].weight)
    assert torch.equal(det.roi_heads.box_head[0].weight, classifier.classifier[0].weight)
    assert set(pruning.current_plan(det)) == {f"backbone.{i}" for i in (0, 4, 8, 12)}
    out = _detect(det)
    assert len(out["boxes"]) > 0
    save_detector(det, tmp_path / "det")  # a plug-in detector reloads as the same architecture
    got = _detect(load_detector(tmp_path / "det"))
    assert torch.equal(out["scores"], got["scores"])


def test_plug_in_a_pruned_vgg16_run_with_a_52_class_head(tmp_path):
    classifier = restrict_classifier(make_model("vgg16", 1000, seed=0), range(52))
    run = _classification_run(tmp_path, classifier, 0.75, 32)
    kept = classifier.features[28].out_channels
    assert kept == 128
    weights = {"conv53": classifier.features[28].weight.clone(), "fc6": classifier.classifier[0].weight.clone()}
    del classifier
    det = detector_from_run(run / "model", "vgg16", min_size=128, max_size=128, rpn_post_nms_top_n_test=20,
                            box_score_thresh=0.0)
    assert det.classifier_num_classes == 52 and det.arch == "vgg16"
    assert det.roi_heads.box_head[0].in_features == kept * 49
    assert det.rpn.head.conv[0][0].in_channels == kept and det.rpn.head.conv[0][0].out_channels == 512
    assert torch.equal(det.get_submodule("backbone.28").weight, weights["conv53"])
    assert torch.equal(det.roi_heads.box_head[0].weight, weights["fc6"])
    assert [det.get_submodule(n).weight.requires_grad for n in backbone_layers(det)] == [False] * 4 + [True] * 9
    assert 0 < len(_detect(det, size=(3, 96, 128))["boxes"]) <= 100


def test_io_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"detector\.json not found: expected a directory written by"):
        load_detector(tmp_path / "nothing")
    det, _ = _tiny_pruned()
    save_detector(det, tmp_path / "d")
    (tmp_path / "d" / "state_dict.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"state_dict\.pt not found"):
        load_detector(tmp_path / "d")
    (tmp_path / "d" / "detector.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"detector\.json is not valid JSON"):
        load_detector(tmp_path / "d")
    (tmp_path / "d" / "detector.json").write_text(json.dumps({"format": "pruning-plan", "version": 1}))
    with pytest.raises(ValueError, match="is not a pruning-detector v1 file"):
        load_detector(tmp_path / "d")
    save_detector(det, tmp_path / "e")
    doc = json.loads((tmp_path / "e" / "detector.json").read_text())
    (tmp_path / "e" / "detector.json").write_text(json.dumps({**doc, "arch": "nosuchnet"}))
    with pytest.raises(ValueError, match="describes a detector that cannot be built: no model 'nosuchnet'"):
        load_detector(tmp_path / "e")
    with pytest.raises(ValueError, match="does not know its classifier's arch"):
        save_detector(detector_from_classifier(TinyVGG(10), preset="tiny"), tmp_path / "f")

    with pytest.raises(FileNotFoundError, match=r"plan\.json not found: expected a classification run's model/"):
        classifier_from_run(tmp_path / "nothing", "vgg16")
    run = _classification_run(tmp_path, make_model("tinyvgg", 52, seed=0), 0.5, 32)
    with pytest.raises(ValueError, match=r"no final Linear 'classifier\.6\.weight'.*not the state_dict of a 'vgg16'"):
        classifier_from_run(run, "vgg16")
    with pytest.raises(ValueError, match="no model 'vgg17'"):
        classifier_from_run(run, "vgg17")
