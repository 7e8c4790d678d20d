"""Which convs to prune (the paper's layer protocols) and where each conv's feature map is observed.

Protocols (:func:`prunable_layers`), each returning conv module names **in the order Algorithm 1 prunes
them: last to first**:

``vgg16``
    The 13 convs of VGG-16 (``model.features``), ``features.28`` first.  Works for ``vgg16`` and
    ``vgg16_bn``; any other number of convs in ``features`` is refused.
``resnet50-16``
    The first conv (``conv1``) of each residual block: the 16 bottlenecks of ResNet-50 (and the
    first conv of each BasicBlock for ResNet-18/34).
``resnet50-32``
    The first two convs (``conv1``, ``conv2``) of each bottleneck.  Refused for BasicBlock networks,
    whose ``conv2`` is coupled to the residual stream.
``all``
    Every prunable conv: the convs are partitioned into *coupled groups* (:mod:`pruning.surgery`:
    residual adds, depthwise convs, squeeze-excitation products tie output filters together) and each
    group is represented by its **first conv in module order**; pruning the representative prunes the
    whole group with the same indices, and its scores are the representative's own.  Groups this library
    cannot prune (:func:`pruning.surgery.unprunable_classes`: a ViT's or MLP-Mixer's patch-embedding conv,
    whose filters become tokens) are left out, with a warning; a model with no prunable group at all is
    refused with a ``ValueError`` naming the model class and its convs.  Families tested:
    docs/model-families.md.

The *observation site* of a conv (:func:`resolve_layers`) is the feature map its filters produce after its
BatchNorm and activation when they follow it, found by ``torch.fx`` tracing: conv -> (BatchNorm2d, if the
conv's only user) -> (activation, if the BN's/conv's only user).  The hook is placed on the activation
module when that module is called exactly once in the network.  A shared module (ResNet's single
``relu`` used three times per block) is hooked too, and a hook on the BN marks its output so that only
the call whose input is that very tensor is observed (no extra activation pass).  Without an fx trace, the BN is found by module order and the
activation is not applied (logged as a warning).

The trace treats every ``nn.BatchNorm2d`` *subclass* as one module (timm's ``BatchNormAct2d``, which applies
its activation ``.act`` inside its forward, would otherwise be traced into a bare ``F.batch_norm`` call);
such a fused activation counts as the conv's activation (``LayerRef.fused_act``), in both the fx and the
module-order fallback.  ``nn.Identity`` calls between conv, BN and activation (timm's disabled
``drop_block``) are skipped.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .surgery import unprunable_classes

log = logging.getLogger(__name__)

PROTOCOLS = ("vgg16", "resnet50-16", "resnet50-32", "all")

# Activation modules (hooked directly: their output is the observed map).
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.Mish, nn.ELU, nn.CELU,
                nn.SELU, nn.Hardtanh, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.PReLU)
# Activation functions and methods: target -> (out-of-place function applied to the conv/BN output in the
# hook, ``LayerRef.post``; names of its positional parameters after the input).  The call's own arguments
# (a LeakyReLU slope, GELU's approximation, ...) are bound into ``post``; ``inplace`` is dropped, since the
# hook must not modify the tensor the model goes on to use.
_ACT_FUNCTIONS = {
    F.relu: (F.relu, ("inplace",)), torch.relu: (F.relu, ()), F.relu_: (F.relu, ()), torch.relu_: (F.relu, ()),
    F.relu6: (F.relu6, ("inplace",)), F.silu: (F.silu, ("inplace",)), F.hardswish: (F.hardswish, ("inplace",)),
    F.mish: (F.mish, ("inplace",)), F.selu: (F.selu, ("inplace",)), F.hardsigmoid: (F.hardsigmoid, ("inplace",)),
    F.gelu: (F.gelu, ("approximate",)),
    F.leaky_relu: (F.leaky_relu, ("negative_slope", "inplace")), F.leaky_relu_: (F.leaky_relu, ("negative_slope",)),
    F.elu: (F.elu, ("alpha", "inplace")), F.elu_: (F.elu, ("alpha",)), F.celu: (F.celu, ("alpha", "inplace")),
    F.hardtanh: (F.hardtanh, ("min_val", "max_val", "inplace")), F.hardtanh_: (F.hardtanh, ("min_val", "max_val")),
    torch.sigmoid: (torch.sigmoid, ()), torch.tanh: (torch.tanh, ()), F.sigmoid: (torch.sigmoid, ()),
    F.tanh: (torch.tanh, ()),
}
_ACT_METHODS = {"relu": (F.relu, ()), "relu_": (F.relu, ()), "sigmoid": (torch.sigmoid, ()),
                "sigmoid_": (torch.sigmoid, ()), "tanh": (torch.tanh, ()), "tanh_": (torch.tanh, ())}


def _activation_post(node: torch.fx.Node) -> Optional[Callable]:
    """The out-of-place form of the activation function/method call ``node`` with its own constant
    arguments bound, or None when ``node`` is not one (or an argument is itself computed in the graph)."""
    if node.op == "call_function" and node.target in _ACT_FUNCTIONS:
        fn, names = _ACT_FUNCTIONS[node.target]
    elif node.op == "call_method" and node.target in _ACT_METHODS:
        fn, names = _ACT_METHODS[node.target]
    else:
        return None
    params = {**dict(zip(names, node.args[1:])), **node.kwargs}
    params.pop("inplace", None)
    if any(isinstance(v, torch.fx.Node) for v in params.values()):
        log.warning("%s: the arguments of %s are computed in the graph; observing its input instead",
                    node.name, node.target)
        return None
    return functools.partial(fn, **params) if params else fn


@dataclasses.dataclass
class LayerRef:
    """A target conv and where its output is observed.

    ``hook_module`` is the module whose forward output is (after ``post``, when not None) the feature map
    ``[N, C_out, H, W]`` the filters produce after BN and activation; zeroing that output is what removing
    the filters does to the network when :meth:`masks_like_removal` (the activation applied after the
    hooked output, if any, maps 0 to 0; not so for a sigmoid called as a function).  ``shared_act``: when the activation is a module called elsewhere
    too (ResNet's ``relu``), ``hook_module`` is the BN and the map is the output of the ``shared_act``
    call whose input is the BN's output (``post`` is then None).  ``bn`` is the BatchNorm2d directly
    consuming the conv's output, if any.
    """

    name: str
    conv: nn.Conv2d
    bn_name: Optional[str]
    bn: Optional[nn.BatchNorm2d]
    hook_name: str
    hook_module: nn.Module
    post: Optional[Callable[[torch.Tensor], torch.Tensor]]
    shared_act: Optional[nn.Module] = None
    fused_act: Optional[nn.Module] = None  # the activation a norm-act BN (timm BatchNormAct2d) applies inside

    @property
    def num_filters(self) -> int:
        return self.conv.out_channels

    @property
    def has_activation(self) -> bool:
        """Whether the observed map is after an activation (a hooked activation module, a shared one, or a
        function applied in the hook), not the bare conv/BN output."""
        return (self.post is not None or self.shared_act is not None or self.fused_act is not None
                or self.hook_name not in (self.name, self.bn_name))

    def masks_like_removal(self) -> bool:
        """Whether zeroing ``hook_module``'s output has the effect of removing the filters: true unless an
        activation still applied after it (``post``, or the ``shared_act`` module) maps 0 elsewhere."""
        act = self.post if self.post is not None else self.shared_act
        if act is None:
            return True
        w = self.conv.weight
        with torch.no_grad():
            return bool((act(torch.zeros(1, self.num_filters, 1, 1, dtype=w.dtype, device=w.device)) == 0).all())


def _fused_act(bn: Optional[nn.Module]) -> Optional[nn.Module]:
    """The activation module a norm-act BatchNorm applies in its own forward (timm's ``BatchNormAct2d``:
    attribute ``act``), or None (plain BN, or ``act`` is ``nn.Identity``)."""
    act = getattr(bn, "act", None)
    return act if isinstance(bn, nn.BatchNorm2d) and isinstance(act, nn.Module) and not isinstance(act, nn.Identity) \
        else None


class _Tracer(torch.fx.Tracer):
    """fx tracer keeping BatchNorm2d subclasses (timm's norm-act layers) whole: module docstring."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.BatchNorm2d) or super().is_leaf_module(m, module_qualified_name)


def _sole_user(node: torch.fx.Node, modules: Optional[dict] = None) -> Optional[torch.fx.Node]:
    """The only user of ``node``, looking through ``nn.Identity`` calls when ``modules`` is given."""
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        user = users[0]
        if modules is None or user.op != "call_module" or not isinstance(modules.get(user.target), nn.Identity):
            return user
        node = user


def _sites_fx(model: nn.Module, names: Sequence[str]) -> Dict[str, tuple]:
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    sites = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in names:
            continue
        bn_name, last = None, node
        user = _sole_user(node, modules)
        if user is not None and user.op == "call_module" and isinstance(modules[user.target], nn.BatchNorm2d):
            bn_name, last = user.target, user
        act_node, post, hook, shared = _sole_user(last, modules), None, last.target, None
        if _fused_act(modules.get(bn_name)) is not None:
            act_node = None  # the BN applied the activation itself: its output is the observed map
        if act_node is not None and act_node.op == "call_module" and type(modules[act_node.target]) in _ACT_MODULES:
            if calls[act_node.target] == 1:
                hook = act_node.target
            else:
                shared = act_node.target
        elif act_node is not None:
            post = _activation_post(act_node)
        sites[node.target] = (bn_name, hook, post, shared)
    return sites


def _sites_by_order(model: nn.Module, names: Sequence[str]) -> Dict[str, tuple]:
    items = list(model.named_modules())
    sites = {}
    for i, (name, module) in enumerate(items):
        if name in names:
            nxt = items[i + 1] if i + 1 < len(items) else None
            if nxt is not None and isinstance(nxt[1], nn.BatchNorm2d) and nxt[1].num_features == module.out_channels:
                sites[name] = (nxt[0], nxt[0], None, None)
            else:
                sites[name] = (None, name, None, None)
    return sites


def resolve_layers(model: nn.Module, names: Sequence[str]) -> List[LayerRef]:
    """:class:`LayerRef` for each conv name (order kept); ``ValueError`` for a name that is not a Conv2d."""
    modules = dict(model.named_modules())
    names = list(names)
    for name in names:
        if not isinstance(modules.get(name), nn.Conv2d):
            found = "no such module" if name not in modules else type(modules[name]).__name__
            raise ValueError(f"{name!r} is not a Conv2d of {type(model).__name__} ({found}); "
                             "use pruning.prunable_layers(model, protocol) for valid names")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate layer names in {names}")
    try:
        sites = _sites_fx(model, names)
    except Exception as exc:  # torch.fx cannot trace data-dependent control flow
        log.warning("torch.fx could not trace %s (%s); observing conv/BN outputs without a "
                    "separate activation (a norm-act BN's own is included)",
                    type(model).__name__, exc)
        sites = _sites_by_order(model, names)
    refs = []
    for name in names:
        bn_name, hook, post, shared = sites[name]
        bn = modules[bn_name] if bn_name else None
        refs.append(LayerRef(name=name, conv=modules[name], bn_name=bn_name, bn=bn, hook_name=hook,
                             hook_module=modules[hook], post=post,
                             shared_act=modules[shared] if shared else None,
                             fused_act=_fused_act(bn) if hook == bn_name else None))
    return refs


def _blocks(model: nn.Module) -> List[tuple]:
    """(name, module) of residual blocks: modules with Conv2d attributes conv1 and conv2 and a BatchNorm
    ``bn1`` (torchvision's BasicBlock / Bottleneck, or any block following that convention)."""
    return [(n, m) for n, m in model.named_modules()
            if n and isinstance(getattr(m, "conv1", None), nn.Conv2d) and isinstance(getattr(m, "conv2", None), nn.Conv2d)
            and isinstance(getattr(m, "bn1", None), nn.BatchNorm2d)]


def prunable_layers(model: nn.Module, protocol: str = "all", example_input: torch.Tensor | None = None) -> List[str]:
    """Conv names targeted by ``protocol`` (one of :data:`PROTOCOLS`), last to first (see module doc)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    if protocol == "vgg16":
        features = getattr(model, "features", None)
        convs = [] if features is None else [f"features.{n}" for n, m in features.named_modules()
                                             if isinstance(m, nn.Conv2d)]
        if len(convs) != 13:
            raise ValueError(f"protocol 'vgg16' needs a VGG-16 (13 convs in model.features); "
                             f"{type(model).__name__} has {len(convs)}; use protocol 'all'")
        return convs[::-1]
    if protocol in ("resnet50-16", "resnet50-32"):
        blocks = _blocks(model)
        if not blocks:
            raise ValueError(f"protocol {protocol!r} needs residual blocks with conv1/conv2 "
                             f"(torchvision ResNet); {type(model).__name__} has none; use protocol 'all'")
        names = []
        for block_name, block in blocks:
            names.append(f"{block_name}.conv1")
            if protocol == "resnet50-32":
                if not isinstance(getattr(block, "conv3", None), nn.Conv2d):
                    raise ValueError(f"protocol 'resnet50-32' needs bottleneck blocks (conv1-conv3); {block_name!r} "
                                     "is a BasicBlock whose conv2 is coupled to the residual stream; "
                                     "use 'resnet50-16' or 'all'")
                names.append(f"{block_name}.conv2")
        return names[::-1]
    classes, refused = unprunable_classes(model, example_input)
    reps = [members[0] for members in classes if members[0] not in refused]
    if refused:
        detail = "; ".join(f"{name!r}: {why}" for name, why in refused.items())
        if not reps:
            raise ValueError(f"{type(model).__name__} has no conv this library can prune ({detail}). Filter pruning "
                             "here is for CNNs (ResNet/ResNeXt, RegNet, EfficientNet/MobileNet, ConvNeXt, VGG, "
                             "DenseNet: docs/model-families.md); for transformers prune attention heads/MLP units "
                             "with another tool")
        log.warning("%s: leaving out convs that cannot be pruned: %s", type(model).__name__, detail)
    return reps[::-1]
