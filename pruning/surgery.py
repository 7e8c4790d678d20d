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

**Grouped convolutions** (ResNeXt, RegNet: ``1 < groups < out_channels``).  Torch-Pruning's
``ConvPruner.prune_in_channels`` (``torch_pruning/pruner/function.py``) keeps ``keep_idxs[:len(keep_idxs) //
groups]`` of the kept input channels, which is right only when every group loses the same *positions*;
its ``MetaPruner`` guarantees that by averaging importance over groups, its ``DependencyGraph`` does not.
:func:`apply_plan` therefore (a) requires every grouped conv the plan touches to lose the **same number**
of input channels (and of output filters) in each of its groups, refusing an unbalanced plan with a
``ValueError`` naming the conv; (b) removes a grouped conv's input channels itself (per group, any
positions), the rest of the group being pruned by Torch-Pruning.  :func:`channel_groups` gives, per conv,
the number of equal contiguous blocks its filters must be pruned evenly across (1 for most convs);
:func:`pruning.select_filters` takes it as ``groups=`` (and reads it from ``Scores.channel_groups``).
Depthwise convs (``groups == in_channels == out_channels``) are Torch-Pruning's own case (in and out
channels coupled).  A conv with ``groups == out_channels != in_channels``, which Torch-Pruning would
take for a depthwise conv, is refused.

**What is not prunable** (refused with a ``ValueError`` naming the model class and the convs):
filters that become transformer/MLP-mixer *tokens* (a ViT's or Mixer's patch-embedding conv: its group
reaches an ``nn.Linear`` applied to a 3-D ``(N, tokens, C)`` tensor, or a parameter such as ``pos_embed``
with more than one non-singleton dimension), and groups reaching ``nn.MultiheadAttention``,
``nn.Embedding`` or a recurrent layer.  :func:`unprunable_classes` lists them;
``prunable_layers(model, "all")`` leaves them out.  Per-channel parameters that belong to no module (ConvNeXt's
layer scale ``gamma``, shape ``(C,)``) are Torch-Pruning's *unwrapped parameters*
(``DependencyGraph._detect_unwrapped_parameters``): pruned along their last non-singleton dimension,
which is the channel dimension for ``(C,)`` and ``(1, C, 1, 1)``.

**Frozen parameters stay frozen.**  Torch-Pruning replaces a pruned weight by a new ``nn.Parameter``
(``requires_grad=True``); :func:`apply_plan` restores ``requires_grad=False`` on every parameter that had it.
"""
from __future__ import annotations

import contextlib
import logging
import math
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


def _fixed_input_size(model: nn.Module) -> int | None:
    """The input side a model insists on: timm's ``pretrained_cfg`` with ``fixed_input_size`` (ViTs, Mixers),
    torchvision's ``VisionTransformer.image_size``; None for models that take any size."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("fixed_input_size") and cfg.get("input_size"):
        return int(cfg["input_size"][-1])
    size = getattr(model, "image_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def default_example_input(model: nn.Module, size: int = 64) -> torch.Tensor:
    """A zero batch ``(1, C, size, size)`` on the model's device, C = in_channels of the first conv (``size``
    is the model's own for a model with a fixed input size, :func:`_fixed_input_size`)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d: nothing to prune (filter pruning is for "
                         "CNNs; supported families: docs/model-families.md)")
    size = _fixed_input_size(model) or size
    param = next(model.parameters())
    return torch.zeros(1, first.in_channels, size, size, device=param.device, dtype=param.dtype)


def _tp():
    """Torch-Pruning, imported on first use: it imports torchvision (and with it PIL), which ``import pruning``
    must not pay for (tests/test_layering.py)."""
    import torch_pruning

    return torch_pruning


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (of ``model.pruning_proxy()`` where the model has one:
    module docstring), traced in eval mode (no BN statistics change); the model's mode is restored after.

    The trace also records which ``nn.Linear`` layers see token sequences (3-D outputs), for
    :func:`unprunable_reason`, as ``graph.token_linears``."""
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"example_input must be a tensor batch (N, C, H, W); got {type(example_input).__name__}")
    tokens = set()

    def _record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 3:
            tokens.add(module)

    with eval_mode(model), torch.enable_grad():
        traced = model.pruning_proxy() if hasattr(model, "pruning_proxy") else model
        hooks = [m.register_forward_hook(_record) for m in traced.modules() if isinstance(m, nn.Linear)]
        try:
            graph = _tp().DependencyGraph().build_dependency(traced, example_inputs=example_input, verbose=False)
        finally:
            for hook in hooks:
                hook.remove()
    graph.token_linears = tokens
    return graph


def _is_grouped(conv: nn.Module) -> bool:
    """A grouped conv Torch-Pruning treats as an ordinary conv (in and out channels not coupled)."""
    return isinstance(conv, nn.Conv2d) and 1 < conv.groups and conv.groups != conv.out_channels


_UNSUPPORTED = (nn.MultiheadAttention, nn.Embedding, nn.RNNBase)


def unprunable_reason(graph: tp.DependencyGraph, group) -> str | None:
    """Why the Torch-Pruning ``group`` cannot be pruned by this library (module docstring), or None."""
    names = graph._module2name
    tokens = getattr(graph, "token_linears", set())
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Linear) and module in tokens:
            return (f"its channels become the features of a token sequence (nn.Linear {names.get(module, '?')!r} "
                    "sees a 3-D (N, tokens, C) tensor): a transformer/MLP-mixer embedding, not a CNN feature map")
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Parameter) and sum(s > 1 for s in module.shape) > 1:
            pname = graph._param_to_name.get(module, "?")
            return (f"it reaches the parameter {pname!r} of shape {tuple(module.shape)} (not per-channel; "
                    "e.g. a position embedding)")
        if isinstance(module, _UNSUPPORTED):
            return f"it reaches {type(module).__name__} {names.get(module, '?')!r}"
        if (isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.out_channels
                and module.in_channels != module.out_channels):
            return (f"conv {names.get(module, '?')!r} has groups == out_channels ({module.groups}) != in_channels "
                    f"({module.in_channels}), which Torch-Pruning would prune as a depthwise conv")
    return None


def _balance_errors(graph: tp.DependencyGraph, group) -> List[str]:
    """For every grouped conv the group prunes: unless each of its groups loses the same number of input
    channels (output filters), a description of the imbalance."""
    names = graph._module2name
    errors = []
    for dep, idxs in group:
        conv = dep.target.module
        if not _is_grouped(conv):
            continue
        side = "in" if graph.is_in_channel_pruning_fn(dep.handler) else "out"
        total = conv.in_channels if side == "in" else conv.out_channels
        size = total // conv.groups
        counts = [0] * conv.groups
        for i in idxs:
            counts[int(i) // size] += 1
        if len(set(counts)) > 1 or (side == "in" and counts[0] >= size):
            what = "input channels" if side == "in" else "output filters"
            errors.append(f"{names[conv]!r} (groups={conv.groups}, {size} {what} per group) would lose {counts} "
                          f"{what} per group")
    return errors


def _prune_grouped_in(conv: nn.Conv2d, idxs: Sequence[int]) -> None:
    """Remove input channels ``idxs`` of a grouped conv: each group keeps its own remaining channels (the
    same number in every group, checked by :func:`_balance_errors`)."""
    drop = set(int(i) for i in idxs)
    size, out_size = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    pieces, grads = [], []
    for g in range(conv.groups):
        keep = torch.tensor([j for j in range(size) if g * size + j not in drop], device=conv.weight.device)
        rows = slice(g * out_size, (g + 1) * out_size)
        pieces.append(conv.weight.data[rows].index_select(1, keep))
        if conv.weight.grad is not None:
            grads.append(conv.weight.grad[rows].index_select(1, keep))
    weight = nn.Parameter(torch.cat(pieces), requires_grad=conv.weight.requires_grad)
    if grads:
        weight.grad = torch.cat(grads)
    conv.weight = weight
    conv.in_channels -= len(drop)


def _prune(graph: tp.DependencyGraph, group) -> None:
    """``group.prune()``, except that grouped convs' input channels are removed by :func:`_prune_grouped_in`
    (Torch-Pruning's ``ConvPruner.prune_in_channels`` assumes the same positions in every group)."""
    grouped = [(dep.target.module, list(idxs)) for dep, idxs in group
               if _is_grouped(dep.target.module) and graph.is_in_channel_pruning_fn(dep.handler)]
    if grouped:
        skip = {id(conv) for conv, _ in grouped}
        group._group = [item for item in group._group
                        if not (id(item.dep.target.module) in skip and graph.is_in_channel_pruning_fn(item.dep.handler))]
    group.prune(record_history=False)
    for conv, idxs in grouped:
        _prune_grouped_in(conv, idxs)


def _balance_of(graph: tp.DependencyGraph, conv: nn.Conv2d) -> int:
    """Number of equal contiguous blocks of ``conv``'s filters that a removal must hit evenly (module doc)."""
    group = pruning_group(graph, conv, list(range(conv.out_channels)))
    blocks = 1
    for dep, idxs in group:
        target = dep.target.module
        if not _is_grouped(target):
            continue
        if [int(i) for i in idxs] != list(range(conv.out_channels)):
            raise ValueError(f"{graph._module2name[conv]!r} reaches the grouped conv {graph._module2name[target]!r} "
                             "through an index remapping (concatenation/split): not supported; leave it unpruned")
        blocks = math.lcm(blocks, target.groups)
    if conv.out_channels % blocks:
        raise ValueError(f"{graph._module2name[conv]!r}: {conv.out_channels} filters cannot be split into "
                         f"{blocks} equal blocks for its grouped convs")
    return blocks


def channel_groups(model: nn.Module, layers: Sequence[str], example_input: torch.Tensor | None = None
                   ) -> Dict[str, int]:
    """``{conv name: G}`` for the ``layers`` whose removal must be spread evenly over ``G > 1`` equal
    contiguous blocks of filters, because their coupled group reaches grouped convs (module docstring);
    layers without that constraint are left out (an empty dict for a model without grouped convs)."""
    modules = dict(model.named_modules())
    if not any(_is_grouped(m) for m in modules.values()):
        return {}
    example_input = default_example_input(model) if example_input is None else example_input
    graph = build_graph(model, example_input)
    out = {}
    for name in layers:
        blocks = _balance_of(graph, modules[name])
        if blocks > 1:
            out[name] = blocks
    return out


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
    return _classes(model, build_graph(model, example_input))


def unprunable_classes(model: nn.Module, example_input: torch.Tensor | None = None
                       ) -> Tuple[List[List[str]], Dict[str, str]]:
    """``(classes, refused)``: the :func:`coupling_classes` and, for each class this library cannot prune
    (module docstring), ``{first conv of the class: reason}``."""
    example_input = default_example_input(model) if example_input is None else example_input
    graph = build_graph(model, example_input)
    classes = _classes(model, graph)
    modules = dict(model.named_modules())
    refused = {}
    for members in classes:
        reason = unprunable_reason(graph, pruning_group(graph, modules[members[0]], [0]))
        if reason is not None:
            refused[members[0]] = reason
    return classes, refused


def _classes(model: nn.Module, graph: tp.DependencyGraph) -> List[List[str]]:
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


def _check_group(model: nn.Module, graph: tp.DependencyGraph, name: str, conv: nn.Conv2d, keep: Sequence[int]
                 ) -> None:
    """``ValueError`` when removing all but ``keep`` of ``conv``'s filters is not something this library
    does (an unprunable group, or uneven removal across a grouped conv's groups: module docstring)."""
    drop = sorted(set(range(conv.out_channels)) - set(keep))
    if not drop:
        return
    group = pruning_group(graph, conv, drop)
    reason = unprunable_reason(graph, group)
    if reason is not None:
        raise ValueError(f"{type(model).__name__}: cannot prune {name!r}: {reason}. Prune CNN convs only "
                         "(pruning.prunable_layers(model, 'all') lists them; supported families: "
                         "docs/model-families.md)")
    unbalanced = _balance_errors(graph, group)
    if unbalanced:
        raise ValueError(f"{type(model).__name__}: the plan for {name!r} removes filters unevenly across the "
                         f"groups of a grouped conv: {'; '.join(unbalanced)}. Remove the same number from each "
                         "block: pruning.select_filters(scores, ratio, groups=pruning.channel_groups(model, "
                         "layers)) does (scores from pruning.score_filters carry it already)")


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
    for name in sorted(plan, key=order.__getitem__):  # refuse before changing anything
        _check_group(model, graph, name, convs[name], plan[name])
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
        _prune(graph, group)
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
