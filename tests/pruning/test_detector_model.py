"""The VGG Faster R-CNN on real torchvision parts: the full-size VGG-16 detector with the VOC preset (its
numbers in torchvision's modules), pruned at 25/50/75% and run (eval and one training step), and the
regression a whole-detector trace shows; presets, overrides, the box head's flatten order, seeds and
construction errors on tinyvgg."""
from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

import pruning
from pruning.detection.model import (PRESETS, VGGFasterRCNN, backbone_layers, detector_from_classifier,
                                     make_detector, resolve_preset)
from pruning.loop.models import TinyVGG, make_model

VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


@pytest.fixture(scope="module")
def vgg16_classifier():
    """A random-init torchvision VGG-16 (1000 classes), built once: its init is the slow part."""
    return make_model("vgg16", 1000, seed=0)


@pytest.fixture(scope="module")
def vgg16(vgg16_classifier):
    """The full-size VGG-16 detector, voc-vgg16 preset as shipped."""
    return make_detector("vgg16", classifier=copy.deepcopy(vgg16_classifier), seed=0)


@pytest.fixture(scope="module")
def vgg16_small(vgg16_classifier):
    """The same architecture, resized to 128 px with 100 test proposals, so that a forward takes a second."""
    return make_detector("vgg16", classifier=copy.deepcopy(vgg16_classifier), seed=0, min_size=128, max_size=128,
                         rpn_post_nms_top_n_test=100, box_score_thresh=0.0)


def test_vgg16_detector_has_the_voc_recipe_in_torchvision_modules(vgg16):
    det = vgg16
    assert isinstance(det, VGGFasterRCNN) and det.arch == "vgg16" and det.preset_name == "voc-vgg16"
    assert backbone_layers(det) == [f"backbone.{i}" for i in VGG16_CONVS]
    assert not isinstance(det.backbone[-1], nn.MaxPool2d) and isinstance(det.backbone[-1], nn.ReLU)
    assert det.backbone.out_channels == 512 and det.stride == 16 and det.roi_size == 7
    rpn_conv = det.rpn.head.conv[0][0]
    assert (rpn_conv.in_channels, rpn_conv.out_channels) == (512, 512)
    assert det.rpn.head.cls_logits.out_channels == 9 and det.rpn.head.bbox_pred.out_channels == 36
    assert det.rpn.anchor_generator.sizes == ((128, 256, 512),)
    assert det.rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),)
    assert det.rpn._pre_nms_top_n == {"training": 12000, "testing": 6000}
    assert det.rpn._post_nms_top_n == {"training": 2000, "testing": 300}
    assert det.rpn.fg_bg_sampler.batch_size_per_image == 256 and det.rpn.nms_thresh == 0.7
    heads = det.roi_heads
    assert heads.box_roi_pool.featmap_names == ["0"] and heads.box_roi_pool.output_size == (7, 7)
    assert heads.box_roi_pool.sampling_ratio == 2
    assert heads.fg_bg_sampler.batch_size_per_image == 128 and heads.fg_bg_sampler.positive_fraction == 0.25
    assert heads.nms_thresh == 0.3 and heads.score_thresh == 0.05 and heads.detections_per_img == 100
    fc6, fc7 = heads.box_head[0], heads.box_head[3]
    assert (fc6.in_features, fc6.out_features, fc7.out_features) == (25088, 4096, 4096)
    assert [type(m).__name__ for m in heads.box_head] == ["Linear", "ReLU", "Dropout"] * 2
    assert heads.box_predictor.cls_score.out_features == 21 and heads.box_predictor.bbox_pred.out_features == 84
    assert det.transform.min_size == (600,) and det.transform.max_size == 1000
    frozen = [not det.get_submodule(n).weight.requires_grad for n in backbone_layers(det)]
    assert frozen == [True] * 4 + [False] * 9  # conv1_1 .. conv2_2


def _random_plan(det, ratio: float, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    plan = {}
    for name in backbone_layers(det):
        n = det.get_submodule(name).out_channels
        plan[name] = sorted(torch.randperm(n, generator=gen)[: n - int(ratio * n)].tolist())
    return plan


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_pruned_vgg16_detector_runs_forward_and_a_training_step(vgg16_small, ratio):
    det = copy.deepcopy(vgg16_small)
    plan = _random_plan(det, ratio)
    pruning.apply_plan(det, plan)
    kept = len(plan["backbone.28"])
    assert kept == 512 - int(ratio * 512)
    convs = [det.get_submodule(n) for n in backbone_layers(det)]
    assert [c.out_channels for c in convs] == [len(plan[n]) for n in backbone_layers(det)]
    assert [c.in_channels for c in convs[1:]] == [c.out_channels for c in convs[:-1]]
    rpn_conv = det.rpn.head.conv[0][0]
    assert (rpn_conv.in_channels, rpn_conv.out_channels) == (kept, 512)
    assert det.roi_heads.box_head[0].in_features == kept * 49
    assert pruning.current_plan(det) == plan
    assert not any(c.weight.requires_grad for c in convs[:4]) and all(c.weight.requires_grad for c in convs[4:])

    image = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(1))
    det.eval()
    with torch.no_grad():
        (out,) = det([image])
    assert 0 < len(out["boxes"]) <= 100 and out["boxes"].shape[1] == 4
    assert out["labels"].min() >= 1 and out["labels"].max() <= 20
    assert out["boxes"][:, 2].max() <= 160 and out["boxes"][:, 3].max() <= 120

    det.train()
    target = {"boxes": torch.tensor([[20.0, 30.0, 120.0, 110.0]]), "labels": torch.tensor([7])}
    losses = det([image], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert det.roi_heads.box_head[0].weight.grad is not None and rpn_conv.weight.grad is not None
    assert convs[-1].weight.grad is not None and convs[0].weight.grad is None


def test_whole_detector_trace_misses_the_rpn_and_the_proxy_does_not(vgg16_small):
    """REGRESSION: torchvision detaches the proposals, so Torch-Pruning's trace of the detector itself
    never reaches the RPN conv: pruning conv5_3 that way leaves its input at 512 and the forward fails."""
    keep = sorted(torch.randperm(512, generator=torch.Generator().manual_seed(0))[:256].tolist())
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))

    whole = copy.deepcopy(vgg16_small).eval()
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(whole, example_inputs=([image],), verbose=False)
    conv53 = whole.get_submodule("backbone.28")
    drop = sorted(set(range(512)) - set(keep))
    graph.get_pruning_group(conv53, tp.prune_conv_out_channels, drop).prune()
    assert conv53.out_channels == 256
    assert whole.rpn.head.conv[0][0].in_channels == 512
    with pytest.raises(RuntimeError, match="to have 512 channels"), torch.no_grad():
        whole([image])

    proxied = copy.deepcopy(vgg16_small).eval()
    pruning.apply_plan(proxied, {"backbone.28": keep})  # traces proxied.pruning_proxy()
    assert proxied.rpn.head.conv[0][0].in_channels == 256 and proxied.roi_heads.box_head[0].in_features == 256 * 49
    assert not proxied.training  # the trace left the detector in its mode
    with torch.no_grad():
        (out,) = proxied([image])
    assert 0 < len(out["boxes"]) <= 100


def test_box_head_flattens_roi_features_as_the_classifier_flattens_its_features():
    """fc6 is used unchanged: the box head on (C, s, s) features equals the classifier on the same features."""
    torch.manual_seed(0)
    classifier = TinyVGG(10).eval()
    reference = copy.deepcopy(classifier)
    det = detector_from_classifier(classifier, preset="tiny", arch="tinyvgg").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = reference.avgpool(det.backbone(x))
        got = reference.classifier[-1](det.roi_heads.box_head(pooled))
        expected = reference(x)
        permuted = reference.classifier(pooled.transpose(2, 3).flatten(1))  # a row-major-by-column flatten
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(permuted, expected)
    assert det.roi_size == 2 and det.stride == 8 and det.backbone.out_channels == 64
    assert det.roi_heads.box_head[0] is classifier.classifier[0]  # taken, not copied


def test_presets_and_overrides():
    assert set(PRESETS) == {"voc-vgg16", "tiny"}
    voc = PRESETS["voc-vgg16"]
    assert (voc.min_size, voc.max_size, voc.box_nms_thresh, voc.frozen_convs) == (600, 1000, 0.3, 4)
    cfg = resolve_preset("voc-vgg16", anchor_sizes=[64, 128], min_size=300)
    assert cfg.anchor_sizes == (64, 128) and cfg.min_size == 300 and cfg.max_size == 1000
    with pytest.raises(ValueError, match=r"unknown detector preset field\(s\) min_sise; valid: min_size, max_size"):
        resolve_preset("voc-vgg16", min_sise=300)
    with pytest.raises(ValueError, match="no detector preset 'coco'; available: tiny, voc-vgg16"):
        resolve_preset("coco")
    with pytest.raises(ValueError, match="'min_size' must be an int; got 'big'"):
        resolve_preset("tiny", min_size="big")
    with pytest.raises(ValueError, match="min_size <= max_size"):
        resolve_preset("tiny", min_size=400)
    det = make_detector("tinyvgg", preset="tiny", rpn_post_nms_top_n_test=7, anchor_sizes=(8, 16))
    assert det.rpn._post_nms_top_n["testing"] == 7 and det.rpn.head.cls_logits.out_channels == 6
    assert det.overrides == {"anchor_sizes": (8, 16), "rpn_post_nms_top_n_test": 7}


def test_same_seed_same_detector_and_the_classifier_plan_comes_along():
    a, b, c = (make_detector("tinyvgg", preset="tiny", seed=s) for s in (3, 3, 4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["rpn.head.conv.0.0.weight"], sc["rpn.head.conv.0.0.weight"])
    classifier = make_model("tinyvgg", 52, seed=0)
    pruning.apply_plan(classifier, {"features.12": list(range(0, 64, 2))}, torch.zeros(1, 3, 32, 32))
    det = make_detector("tinyvgg", preset="tiny", classifier=classifier)
    assert pruning.current_plan(det) == {"backbone.12": list(range(0, 64, 2))}
    assert det.roi_heads.box_head[0].in_features == 32 * 4 and det.rpn.head.conv[0][0].in_channels == 32
    assert det.classifier_num_classes == 52


def test_construction_errors_name_what_to_do():
    with pytest.raises(ValueError, match="not a 'vgg16'"):
        make_detector("vgg16", classifier=TinyVGG(10))
    with pytest.raises(ValueError, match="is not VGG-like"):
        detector_from_classifier(make_model("resnet18", 10))
    with pytest.raises(ValueError, match="frozen_convs=5 but the backbone has 4 convs"):
        make_detector("tinyvgg", preset="tiny", frozen_convs=5)
    with pytest.raises(ValueError, match="num_classes counts the background"):
        make_detector("tinyvgg", num_classes=1, preset="tiny")
    with pytest.raises(ValueError, match="needs a VGGFasterRCNN"):
        backbone_layers(TinyVGG(10))
