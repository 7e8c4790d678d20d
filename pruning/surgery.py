"""Physical filter removal, delegated to Torch-Pruning's ``DependencyGraph``.

Removing output filters of a convolution shrinks the conv (weight rows, bias), its BatchNorm, and every
consumer: the next conv's input channels, the flatten-to-``Linear`` after VGG's last conv (49 columns per
channel), and all channels *coupled* to it through residual adds, concatenations, depthwise convolutions
and squeeze-excitation products.  Torch-Pruning (``tp.DependencyGraph().build_dependency(model,
example_inputs)``, ``get_pruning_group(conv, tp.prune_conv_out_channels, idxs)``, ``group.prune()``)
traces the network with autograd and finds that coupling; we do no graph walking of our own.

**Coupled groups.**  Two convs are *coupled* when pruning the output filters of one necessarily removes
the same output filters of the other (e.g. ``layer1.0.conv3``, ``layer1.0.downsample.0``,
``layer1.1.conv3`` and ``layer1.2.conv3`` of ResNet-50 all write into the same residual stream; an
inverted-residual expand conv and the depthwise conv after it).  A plan may name any member of a group;
the whole group is pruned with the same indices.  Naming two members with different indices is refused.

**Plans compose.**  Every :func:`apply_plan` records, on the model, the cumulative plan relative to the
*original* architecture (``current_plan(model)``: conv name -> kept original filter indices, for every
conv whose outputs were removed, coupled members included).  Replaying that cumulative plan on a fresh
model reproduces the shapes exactly; :mod:`pruning.plan` saves it beside the state_dict.

**Tracing proxies.**  A model whose forward hides a consumer from autograd (torchvision's Faster R-CNN
detaches the RPN's outputs, so a trace from the detections never reaches the RPN conv) may define
``pruning_proxy()``: an ``nn.Module`` that *shares* the model's submodules under the same attribute paths
and whose ``forward(example_input)`` reaches every consumer of the prunable convs.  :func:`build_graph`
then traces the proxy instead of the model; plan names, :func:`current_plan` and the recorded input shape
stay in the model's own namespace (``pruning.detection.model.VGGFasterRCNN`` is the one user).

**Frozen parameters stay frozen.**  Torch-Pruning replaces a pruned weight by a new ``nn.Parameter``
(``requires_grad=True``); :func:`apply_plan` restores ``requires_grad=False`` on every parameter that had it.
"""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch
from torch import nn

if TYPE_CHECKING:
    import torch_pruning as tp

log = logging.getLogger(__name__)

Plan = Dict[str, List[int]]

_PLAN_ATTR = "_pruning_plan"
_SHAPE_ATTR = "_pruning_input_shape"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (BN uses running statistics, no dropout) and restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def default_example_input(model: nn.Module, size: int = 64) -> torch.Tensor:
    """A zero batch ``(1, C, size, size)`` on the model's device, C = in_channels of the first conv."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d: nothing to prune")
    param = next(model.parameters())
    return torch.zeros(1, first.in_channels, size, size, device=param.device, dtype=param.dtype)


def _tp():
    """Torch-Pruning, imported on first use: it imports torchvision (and with it PIL), which ``import pruning``
    must not pay for (tests/test_layering.py)."""
    import torch_pruning

    return torch_pruning


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (of ``model.pruning_proxy()`` where the model has one:
    module docstring), traced in eval mode (no BN statistics change); the model's mode is restored after."""
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"example_input must be a tensor batch (N, C, H, W); got {type(example_input).__name__}")
    with eval_mode(model), torch.enable_grad():
        traced = model.pruning_proxy() if hasattr(model, "pruning_proxy") else model
        return _tp().DependencyGraph().build_dependency(traced, example_inputs=example_input, verbose=False)


def _conv_members(graph: tp.DependencyGraph, group) -> List[Tuple[str, List[int]]]:
    """(conv name, pruned output indices) of every Conv2d whose *output* filters the group removes."""
    names = graph._module2name
    out = []
    for dep, idxs in group:
        module = dep.target.module
        if isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler):
            out.append((names[module], sorted(int(i) for i in idxs)))
    return out


def coupled_convs(graph: tp.DependencyGraph, conv: nn.Conv2d) -> List[str]:
    """Names (module order) of the convs whose output filters are coupled to ``conv``'s, itself included."""
    group = graph.get_pruning_group(conv, _tp().prune_conv_out_channels, [0])
    order = {name: i for i, name in enumerate(graph._module2name.values())}
    return sorted({name for name, _ in _conv_members(graph, group)}, key=order.__getitem__)


def pruning_group(graph: tp.DependencyGraph, conv: nn.Conv2d, idxs: Sequence[int]):
    """The Torch-Pruning group that removes output filters ``idxs`` of ``conv`` (and everything coupled)."""
    return graph.get_pruning_group(conv, _tp().prune_conv_out_channels, list(idxs))


def coupling_classes(model: nn.Module, example_input: torch.Tensor | None = None) -> List[List[str]]:
    """Partition of all convs into coupled groups, each listed in module order, groups in module order."""
    example_input = default_example_input(model) if example_input is None else example_input
    graph = build_graph(model, example_input)
    seen: Dict[str, int] = {}
    classes: List[List[str]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or name in seen:
            continue
        members = coupled_convs(graph, module)
        for member in members:
            seen[member] = len(classes)
        classes.append(members)
    return classes


def _check_plan(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> Dict[str, nn.Conv2d]:
    if not isinstance(plan, Mapping):
        raise ValueError(f"plan must be a mapping {{conv name: kept filter indices}}; got {type(plan).__name__}")
    modules = dict(model.named_modules())
    convs = {}
    for name, keep in plan.items():
        conv = modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            found = "no such module" if conv is None else type(conv).__name__
            raise ValueError(f"plan names {name!r}, which is not a Conv2d of {type(model).__name__} ({found}); "
                             "plan keys must be conv module names as in model.named_modules()")
        keep = list(keep)
        if not keep:
            raise ValueError(f"plan keeps no filter of {name!r}; keep at least one")
        if any(not isinstance(i, int) or isinstance(i, bool) for i in keep):
            raise ValueError(f"plan[{name!r}] must be a list of ints")
        if keep != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= conv.out_channels:
            raise ValueError(f"plan[{name!r}] must be sorted, unique indices in [0, {conv.out_channels}) "
                             f"(the layer's current filters); got {keep[:8]}{'...' if len(keep) > 8 else ''}")
        convs[name] = conv
    return convs


def current_plan(model: nn.Module) -> Plan:
    """Cumulative plan of everything :func:`apply_plan` removed from ``model`` (original indices)."""
    return {name: list(keep) for name, keep in getattr(model, _PLAN_ATTR, {}).items()}


def apply_plan(model: nn.Module, plan: Mapping[str, Sequence[int]], example_input: torch.Tensor | None = None
               ) -> nn.Module:
    """Physically remove filters, in place: keep, for each conv named in ``plan``, only the listed output
    filters (indices into the layer's *current* filters), with their coupled group.  Returns ``model``.

    ``example_input`` is a batch the model accepts (only its shape matters; default ``(1, C, 64, 64)``).
    """
    convs = _check_plan(model, plan)
    if example_input is None:
        example_input = default_example_input(model)
    elif isinstance(example_input, torch.Tensor) and example_input.is_floating_point():
        param = next(model.parameters())  # only the shape matters: follow the model's device and dtype
        example_input = example_input.to(device=param.device, dtype=param.dtype)
    graph = build_graph(model, example_input)
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    cumulative: Dict[str, List[int]] = getattr(model, _PLAN_ATTR, {})
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    done: Dict[str, List[int]] = {}  # conv -> kept indices (current numbering) pruned in this call
    removed = 0
    for name in sorted(plan, key=order.__getitem__):
        keep = list(plan[name])
        if name in done:
            if done[name] != keep:
                raise ValueError(f"plan prunes {name!r} inconsistently with a coupled conv it shares filters with "
                                 f"(coupled group kept {done[name][:8]}..., plan says {keep[:8]}...); "
                                 "name one member of a coupled group, or give all members the same indices")
            continue
        conv = convs[name]
        drop = sorted(set(range(conv.out_channels)) - set(keep))
        if not drop:
            continue
        group = pruning_group(graph, conv, drop)
        members = _conv_members(graph, group)
        sizes = {member: modules[member].out_channels for member, _ in members}
        group.prune(record_history=False)
        for member, idxs in members:
            n = sizes[member]
            kept_now = sorted(set(range(n)) - set(idxs))
            if member in plan and member != name and list(plan[member]) != kept_now:
                raise ValueError(f"plan prunes {member!r} inconsistently with the coupled conv {name!r}; "
                                 "give all members of a coupled group the same indices")
            done[member] = kept_now
            before = cumulative.get(member, list(range(n)))
            cumulative[member] = [before[i] for i in kept_now]
        removed += len(drop)
    for pname, p in model.named_parameters():
        if pname in frozen:  # Torch-Pruning's new Parameters default to requires_grad=True
            p.requires_grad_(False)
    setattr(model, _PLAN_ATTR, cumulative)
    setattr(model, _SHAPE_ATTR, list(example_input.shape))
    log.info("removed %d filters from %d conv(s) of %s", removed, len(done), type(model).__name__)
    return model
