"""Faster R-CNN (Ren et al. 2015) on torchvision's ``FasterRCNN`` with the layers of a VGG-like classifier.

A *VGG-like classifier* is an ``nn.Module`` with ``.features`` (an ``nn.Sequential`` of convs and pools),
``.avgpool`` (an ``nn.AdaptiveAvgPool2d`` of output ``s x s``) and ``.classifier`` (an ``nn.Sequential``
whose last module is the final ``nn.Linear``): torchvision's ``vgg*`` and our ``tinyvgg``.  From it:

backbone
    ``features`` without a trailing ``nn.MaxPool2d`` (vgg16: conv1_1 ... conv5_3 + ReLU, 13 convs);
    ``out_channels`` = the last conv's filters; stride ``S`` = product of the pools' and convs' strides
    (vgg16: 2^4 = 16; tinyvgg: 8).  Its convs are named ``backbone.<i>`` with the classifier's ``<i>``.
box head
    ``classifier`` minus its final Linear (vgg16: fc6, ReLU, Dropout, fc7, ReLU, Dropout), applied to the
    RoI features ``(R, C, s, s)`` flattened channel-major (``x.flatten(1)``: column ``c*s*s + i*s + j``),
    exactly as VGG flattens ``avgpool(features(x))``, so fc6's weights are used unchanged.  RoI pooling:
    ``MultiScaleRoIAlign(["0"], s, sampling_ratio)`` at scale ``1/S``.
new layers
    the RPN (``RPNHead``: 3x3 conv ``C -> C`` + ReLU, 1x1 objectness and box convs, N(0, 0.01) weights)
    and ``FastRCNNPredictor(d, num_classes)`` (d = the final Linear's input; N(0, 0.01) scores,
    N(0, 0.001) boxes, zero biases, as py-faster-rcnn's VGG16 prototxt).

The classifier's modules are *taken*, not copied (pass ``copy.deepcopy(classifier)`` to keep yours), and
a classifier pruned by :func:`pruning.apply_plan` brings its plan along (``features.<i>`` ->
``backbone.<i>``).  The first ``frozen_convs`` backbone convs get ``requires_grad=False`` on weight and
bias; BatchNorm layers (tinyvgg) stay trainable and update their statistics in train mode.
:meth:`VGGFasterRCNN.pruning_proxy` lets :func:`pruning.apply_plan` see the RPN conv and fc6 as consumers
of the last backbone conv (torchvision detaches the proposals).  docs/detector.md has every preset value
with its source.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import Conv2dNormActivation

from ..loop.models import make_model
from ..surgery import _PLAN_ATTR, _SHAPE_ATTR, current_plan

__all__ = ["DetectorPreset", "PRESETS", "VGGFasterRCNN", "backbone_layers", "detector_from_classifier",
           "make_detector", "resolve_preset"]


@dataclass(frozen=True)
class DetectorPreset:
    """Every number of a detector recipe (names as torchvision ``FasterRCNN``'s arguments, sizes in pixels
    of the resized image; docs/detector.md gives each value's source)."""

    min_size: int                   # shorter side after resizing
    max_size: int                   # longer side at most
    anchor_sizes: Tuple[int, ...]   # anchor sqrt(area), one feature map
    aspect_ratios: Tuple[float, ...]  # anchor h / w
    rpn_pre_nms_top_n_train: int
    rpn_post_nms_top_n_train: int
    rpn_pre_nms_top_n_test: int
    rpn_post_nms_top_n_test: int
    rpn_batch_size_per_image: int   # anchors sampled for the RPN loss
    box_batch_size_per_image: int   # RoIs sampled per image for the box loss
    frozen_convs: int               # first backbone convs with requires_grad=False
    rpn_channels: int               # filters of the RPN's 3x3 conv (fixed: pruning changes only its input)
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_positive_fraction: float = 0.5
    box_positive_fraction: float = 0.25
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_nms_thresh: float = 0.3
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100
    roi_sampling_ratio: int = 2
    image_mean: Tuple[float, ...] = (0.485, 0.456, 0.406)  # the classifiers' ImageNet normalisation
    image_std: Tuple[float, ...] = (0.229, 0.224, 0.225)


PRESETS: Dict[str, DetectorPreset] = {
    "voc-vgg16": DetectorPreset(
        min_size=600, max_size=1000, anchor_sizes=(128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300,
        rpn_batch_size_per_image=256, box_batch_size_per_image=128, frozen_convs=4, rpn_channels=512),
    "tiny": DetectorPreset(
        min_size=128, max_size=192, anchor_sizes=(16, 32, 64), aspect_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=64, box_batch_size_per_image=32, frozen_convs=0, rpn_channels=64),
}

_FIELDS = {f.name: f for f in dataclasses.fields(DetectorPreset)}
_TUPLES = {"anchor_sizes", "aspect_ratios", "image_mean", "image_std"}


def resolve_preset(preset: str = "voc-vgg16", **overrides) -> DetectorPreset:
    """``PRESETS[preset]`` with ``overrides`` (preset field -> value; lists become tuples) applied."""
    if preset not in PRESETS:
        raise ValueError(f"no detector preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown detector preset field(s) {', '.join(unknown)}; valid: {', '.join(_FIELDS)}")
    clean = {}
    for key, value in overrides.items():
        if key in _TUPLES:
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"preset field {key!r} must be a non-empty list of numbers; got {value!r}")
            value = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, int if _FIELDS[key].type == "int" else (int, float)):
            kind = "an int" if _FIELDS[key].type == "int" else "a number"
            raise ValueError(f"preset field {key!r} must be {kind}; got {value!r}")
        clean[key] = value
    out = dataclasses.replace(PRESETS[preset], **clean)
    if not 0 < out.min_size <= out.max_size:
        raise ValueError(f"preset needs 0 < min_size <= max_size; got min_size={out.min_size}, max_size={out.max_size}")
    if out.frozen_convs < 0 or out.rpn_channels < 1:
        raise ValueError(f"preset needs frozen_convs >= 0 and rpn_channels >= 1; got {out.frozen_convs}, "
                         f"{out.rpn_channels}")
    return out


class BoxHead(nn.Sequential):
    """The classifier's layers before its final Linear, on RoI features flattened channel-major."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class _PruningProxy(nn.Module):
    """Shares ``backbone``, ``rpn`` and ``roi_heads`` of a detector (same attribute paths, so Torch-Pruning's
    names are the detector's); ``forward(x)`` runs backbone -> RPN head, and backbone -> adaptive average
    pool to the RoI size (standing in for RoI pooling: same ``(C, s, s)`` per region) -> box head ->
    predictor, returning every output, so a trace sees all consumers of the last backbone conv."""

    def __init__(self, detector: "VGGFasterRCNN"):
        super().__init__()
        self.backbone, self.rpn, self.roi_heads = detector.backbone, detector.rpn, detector.roi_heads
        self.roi_size = detector.roi_size

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if not x.requires_grad:  # frozen first convs would otherwise leave no autograd node to trace
            x = x.detach().requires_grad_(True)
        features = self.backbone(x)
        objectness, deltas = self.rpn.head([features])
        pooled = F.adaptive_avg_pool2d(features, self.roi_size)
        scores, boxes = self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))
        return [*objectness, *deltas, scores, boxes]


def _fp32_outputs(module: nn.Module, inputs, output):
    """Forward hook: the module's floating outputs (a tensor, or lists/tuples of them) as float32.  A no-op in
    fp32; under bf16 autocast it keeps anchors, box decoding, NMS and the detections in float32 while the
    convs and linears still run in bf16 (docs/detector.md, "Precision")."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (list, tuple)):
        return type(output)(_fp32_outputs(module, inputs, o) for o in output)
    return output


class VGGFasterRCNN(FasterRCNN):
    """torchvision ``FasterRCNN`` over a VGG-like classifier's layers (module docstring); build it with
    :func:`detector_from_classifier` or :func:`make_detector`.  Attributes: ``arch`` (str or None),
    ``preset_name``, ``overrides``, ``preset`` (the resolved :class:`DetectorPreset`), ``stride``,
    ``roi_size``, ``classifier_num_classes``."""

    def __init__(self, backbone: nn.Sequential, box_head: BoxHead, representation: int, num_classes: int,
                 preset: DetectorPreset, roi_size: int, stride: int):
        anchors = AnchorGenerator((tuple(preset.anchor_sizes),), (tuple(preset.aspect_ratios),))
        roi_pool = MultiScaleRoIAlign(["0"], roi_size, sampling_ratio=preset.roi_sampling_ratio)
        keys = [k for k in _FIELDS if k.startswith(("rpn_", "box_")) and k != "rpn_channels"]
        super().__init__(backbone, num_classes=None, min_size=preset.min_size, max_size=preset.max_size,
                         image_mean=list(preset.image_mean), image_std=list(preset.image_std),
                         rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head,
                         rpn_head=rpn_head(backbone.out_channels, preset.rpn_channels, anchors),
                         box_predictor=FastRCNNPredictor(representation, num_classes),
                         size_divisible=max(32, stride), **{k: getattr(preset, k) for k in keys})
        with torch.no_grad():
            for layer, std in ((self.roi_heads.box_predictor.cls_score, 0.01),
                               (self.roi_heads.box_predictor.bbox_pred, 0.001)):
                layer.weight.normal_(0.0, std)
                layer.bias.zero_()
        self.preset, self.roi_size, self.stride = preset, roi_size, stride
        # fp32 boxes under autocast: anchors are made in the feature map's dtype and torchvision decodes boxes
        # in the head outputs' dtype, so in bf16 every coordinate above 512 px would be a multiple of 4
        for module in (self.backbone, self.rpn.head, self.roi_heads.box_predictor):
            module.register_forward_hook(_fp32_outputs)
        self.arch: Optional[str] = None
        self.preset_name, self.overrides, self.classifier_num_classes = "", {}, 0

    def pruning_proxy(self) -> nn.Module:
        """The module :func:`pruning.apply_plan` traces (see :class:`_PruningProxy`)."""
        return _PruningProxy(self)


def rpn_head(in_channels: int, channels: int, anchors: AnchorGenerator) -> RPNHead:
    """torchvision's ``RPNHead`` with a 3x3 conv ``in_channels -> channels`` (+ ReLU) and 1x1 objectness /
    box convs on ``channels``; weights N(0, 0.01), biases 0 (torchvision's and py-faster-rcnn's init)."""
    head = RPNHead(channels, anchors.num_anchors_per_location()[0])
    head.conv = nn.Sequential(Conv2dNormActivation(in_channels, channels, kernel_size=3, norm_layer=None))
    nn.init.normal_(head.conv[0][0].weight, std=0.01)
    nn.init.zeros_(head.conv[0][0].bias)
    return head


def backbone_stride(backbone: nn.Sequential) -> int:
    """Product of the strides of every conv and pool of ``backbone`` (a square stride per layer)."""
    stride = 1
    for m in backbone.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            stride *= int(s)
    return stride


def _parts(classifier: nn.Module) -> Tuple[nn.Sequential, BoxHead, int, int]:
    """(backbone, box head, representation size, RoI size) of a VGG-like classifier, checked."""
    name = type(classifier).__name__
    features, head = getattr(classifier, "features", None), getattr(classifier, "classifier", None)
    pool = getattr(classifier, "avgpool", None)
    if not isinstance(features, nn.Sequential) or not isinstance(head, nn.Sequential) or not len(head):
        raise ValueError(f"{name} is not VGG-like: expected .features and .classifier nn.Sequential "
                         "(e.g. torchvision vgg16 or tinyvgg)")
    if not isinstance(head[-1], nn.Linear):
        raise ValueError(f"{name}.classifier must end with the final nn.Linear; it ends with {type(head[-1]).__name__}")
    if not isinstance(pool, nn.AdaptiveAvgPool2d):
        raise ValueError(f"{name} has no .avgpool nn.AdaptiveAvgPool2d: its size sets the RoI size fc6 expects")
    size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    layers = list(features)
    if layers and isinstance(layers[-1], nn.MaxPool2d):
        layers = layers[:-1]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{name}.features has no nn.Conv2d")
    backbone = nn.Sequential(*layers)
    backbone.out_channels = convs[-1].out_channels
    first = next((m for m in head if isinstance(m, nn.Linear)))
    if first.in_features != backbone.out_channels * size * size:
        raise ValueError(f"{name}: the first Linear takes {first.in_features} inputs but the last conv has "
                         f"{backbone.out_channels} filters x {size}x{size}; prune with pruning.apply_plan")
    return backbone, BoxHead(*list(head)[:-1]), head[-1].in_features, int(size)


def detector_from_classifier(classifier: nn.Module, num_classes: int = 21, preset: str = "voc-vgg16", *,
                             arch: Optional[str] = None, **overrides) -> VGGFasterRCNN:
    """A :class:`VGGFasterRCNN` over ``classifier``'s layers (taken, not copied); ``num_classes`` counts
    the background (VOC: 21); ``preset`` + ``overrides`` (:func:`resolve_preset`); ``arch`` is the
    classifier's :func:`pruning.loop.make_model` name, needed to save the detector."""
    cfg = resolve_preset(preset, **overrides)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be an int >= 2; got {num_classes!r}")
    backbone, box_head, representation, roi_size = _parts(classifier)
    stride = backbone_stride(backbone)
    if stride & (stride - 1):
        raise ValueError(f"backbone stride {stride} is not a power of 2: RoI pooling infers its scale as one")
    convs = [m for m in backbone if isinstance(m, nn.Conv2d)]
    if cfg.frozen_convs > len(convs):
        raise ValueError(f"frozen_convs={cfg.frozen_convs} but the backbone has {len(convs)} convs")
    param = next(classifier.parameters())
    detector = VGGFasterRCNN(backbone, box_head, representation, num_classes, cfg, roi_size, stride)
    for conv in convs[:cfg.frozen_convs]:
        for p in conv.parameters():
            p.requires_grad_(False)
    plan = {}
    for name, keep in current_plan(classifier).items():
        if not name.startswith("features."):
            raise ValueError(f"the classifier's plan prunes {name!r}, outside .features: not a VGG-like backbone")
        plan["backbone." + name[len("features."):]] = keep
    if plan:
        setattr(detector, _PLAN_ATTR, plan)
    if hasattr(classifier, _SHAPE_ATTR):
        setattr(detector, _SHAPE_ATTR, list(getattr(classifier, _SHAPE_ATTR)))
    fc = classifier.classifier[-1]
    detector.arch, detector.classifier_num_classes = arch, fc.out_features
    detector.preset_name, detector.overrides = preset, {k: overrides[k] for k in sorted(overrides)}
    return detector.to(device=param.device, dtype=param.dtype)


def _layer_types(model: nn.Module) -> List[str]:
    return [type(m).__name__ for m in getattr(model, "features", ())]


def _check_arch(classifier: nn.Module, arch: str) -> None:
    """Refuse a classifier that is not a ``make_model(arch)`` (class and layer sequence of ``.features``;
    the reference is built on the meta device: no weights, no time)."""
    with torch.device("meta"):
        ref = make_model(arch, 1)
    if type(ref) is not type(classifier) or _layer_types(ref) != _layer_types(classifier):
        raise ValueError(f"the classifier is a {type(classifier).__name__} with {len(_layer_types(classifier))} "
                         f"feature layers, not a {arch!r} ({type(ref).__name__}, {len(_layer_types(ref))} layers); "
                         "pass the arch it was built with")


def make_detector(arch: str = "vgg16", num_classes: int = 21, preset: str = "voc-vgg16",
                  classifier: Optional[nn.Module] = None, seed: Optional[int] = None, **overrides) -> VGGFasterRCNN:
    """:func:`detector_from_classifier` over ``classifier``, or over a fresh ``make_model(arch)`` (1000
    classes, random init).  ``seed`` seeds everything initialised here (classifier, RPN, predictor): the
    same seed gives identical weights."""
    if seed is not None:
        torch.manual_seed(seed)
    if classifier is None:
        classifier = make_model(arch, 1000)
    else:
        _check_arch(classifier, arch)
    return detector_from_classifier(classifier, num_classes, preset, arch=arch, **overrides)


def backbone_layers(detector: nn.Module) -> List[str]:
    """Names (detector namespace, first to last) of the backbone's convs: ``backbone.0`` ... ``backbone.28``
    for vgg16 (13 convs)."""
    if not isinstance(detector, VGGFasterRCNN):
        raise ValueError(f"backbone_layers needs a VGGFasterRCNN; got {type(detector).__name__}")
    return [name for name, m in detector.named_modules() if name.startswith("backbone.") and isinstance(m, nn.Conv2d)]

