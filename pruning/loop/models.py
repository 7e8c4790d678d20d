"""Models for the engine: the model factory (``make_model``, ``register_model``), class-subset classifiers
(``restrict_classifier``) and the starting model's full head for scoring (``FullHead``).

``make_model(name, num_classes, weights=...)`` returns a torchvision model by name, a timm
model (``timm/<name>`` or ``timm:<name>``), or ``tinyvgg``: a small VGG-shaped CNN (``features`` of
conv-BN-ReLU blocks with max-pools, then ``classifier``) that trains in seconds on CPU and is pruned
exactly like VGG-16 (its convs are named ``features.<i>``).  Weights are random (seeded), a
``state_dict`` file, a torchvision weight name (``IMAGENET1K_V1``, ``DEFAULT``) or a timm pretrained
tag, read from torchvision's or the Hugging Face cache (:mod:`pruning.weights`).

``restrict_classifier(model, indices)`` turns a classifier over N classes into
one over ``len(indices)`` classes by keeping only those rows of the final
linear layer (weights and bias), so an ImageNet-1k model becomes an
ImageNet-52P model that starts from its pretrained class scores: the restricted
model's logit ``j`` equals the original model's logit ``indices[j]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..files import load_weights, read_state_dict
from ..registry import refuse_duplicate

log = logging.getLogger(__name__)

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator registering a model constructor ``fn(num_classes) -> nn.Module``; refuses duplicates."""

    def deco(fn):
        refuse_duplicate("model", name, _FACTORIES)
        _FACTORIES[name] = fn
        return fn

    return deco


class TinyVGG(nn.Module):
    """A small VGG: ``widths`` conv3x3-BN-ReLU blocks, a 2x2 max-pool after each
    block listed in ``pool_after``, global average pooling, then a two-layer
    classifier.  Default: 4 convs (16, 32, 32, 64 filters), ~40k parameters."""

    def __init__(self, num_classes: int = 10, widths=(16, 32, 32, 64), pool_after=(0, 1, 2), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4, 64), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("tinyvgg")
def _tinyvgg(num_classes: int) -> nn.Module:
    return TinyVGG(num_classes)


def list_models() -> list[str]:
    """Our own registered names plus every torchvision classification model name (timm models are named
    ``timm/<name>``: see :func:`model_known`)."""
    import torchvision  # on first use: it imports PIL, which `import pruning` must not

    return sorted(set(_FACTORIES) | set(torchvision.models.list_models(module=torchvision.models)))


def model_known(name: str) -> str | None:
    """None when :func:`make_model` can build ``name``; else the reason, with the names it knows."""
    from ..weights import check_timm_model, timm_arch

    if timm_arch(name) is not None:
        try:
            check_timm_model(name)
        except ValueError as e:
            return str(e)
        return None
    if name in list_models():
        return None
    return f"no model {name!r}; available: {', '.join(list_models())}, or a timm model as timm/<name>"


def _load_file(model: nn.Module, name: str, path: Path) -> None:
    state = read_state_dict(path)  # a ValueError naming the file for anything but a state_dict
    load_weights(model, state, path)
    log.info("loaded weights for %s from %s", name, path)


def _check_named_classes(name: str, source, num_classes: int) -> None:
    if source.num_classes is not None and num_classes != source.num_classes:
        raise ValueError(f"weights {source.name} of {name} have a {source.num_classes}-class classifier, so the "
                         f"model is built with num_classes={source.num_classes}, not {num_classes}; keep "
                         f"{source.num_classes} and restrict it to a class subset afterwards (restrict_classifier, "
                         "head = \"restrict\")")


def make_model(name: str, num_classes: int = 1000, weights=None, seed: int | None = None) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs.

    ``weights`` (:func:`pruning.weights.resolve_weights`): None (random init, seeded by ``seed``: same
    seed -> identical weights), a ``state_dict`` file for the model *as built* (a 1000-class checkpoint
    needs ``num_classes=1000``; restrict it afterwards with :func:`restrict_classifier`), a torchvision
    weight name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) or a timm pretrained tag / ``"DEFAULT"``, read from
    torchvision's or the Hugging Face cache (downloaded there when missing and allowed), or a
    :class:`~pruning.weights.WeightsSource` already resolved.  Named weights fix ``num_classes`` to their
    classifier's (1000 for ImageNet-1k weights).
    """
    from ..weights import check_timm_model, resolve_weights, timm_arch

    if timm_arch(name) is not None:
        check_timm_model(name)  # a clear error for an unknown name (or timm not installed), before anything else
    source = resolve_weights(name, weights)
    if seed is not None:
        torch.manual_seed(seed)
    arch = timm_arch(name)
    family = "timm" if arch is not None else ("own" if name in _FACTORIES else "torchvision")
    if source.kind not in ("random", "file") and source.kind != family:
        raise ValueError(f"weights {source.name or source.kind!r} ({source.kind}) are not weights of {family} "
                         f"model {name!r}; give this model's weight name, a state_dict file, or none")
    if name in _FACTORIES:
        model = _FACTORIES[name](num_classes)
    elif arch is not None:
        model = _timm_model(name, arch, num_classes, source)
    else:
        problem = model_known(name)
        if problem:
            raise ValueError(problem)
        import torchvision

        if source.kind == "torchvision":
            _check_named_classes(name, source, num_classes)
            try:
                model = torchvision.models.get_model(name, weights=source.name)
            except Exception as exc:  # noqa: BLE001 - torch.load's own words for a damaged cache file
                raise ValueError(f"torchvision cannot load {source.name} from {source.path}: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}; the file is damaged or not torchvision's: delete it and run "
                                 "again (it is downloaded again), or place torchvision's file there") from None
            log.info("loaded torchvision weights %s from %s", source.name, source.path)
            return model
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if source.kind == "file":
        _load_file(model, name, source.path)
    return model


def _timm_model(name: str, arch: str, num_classes: int, source) -> nn.Module:
    import timm

    if source.kind != "timm":
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    _check_named_classes(name, source, num_classes)
    full = source.name[len("timm/"):]
    try:
        model = timm.create_model(full, pretrained=True, num_classes=num_classes,
                                  pretrained_cfg_overlay={"file": str(source.path)})
    except Exception as exc:  # noqa: BLE001 - timm's loader's own words for a damaged or foreign file
        raise ValueError(f"timm cannot load {source.name} from {source.path}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}; the file is damaged or not this model's: delete its snapshot folder "
                         "and run again, or give a weights file") from None
    log.info("loaded timm weights %s from %s", source.name, source.path)
    return model


def find_classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final ``nn.Linear`` of ``model`` (the last one in module order): ``(name, module)``."""
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (name, mod)
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to restrict")
    return last


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def restrict_classifier(model: nn.Module, indices) -> nn.Module:
    """Keep only rows ``indices`` of the final linear layer (in place; returns ``model``).

    After this, label ``j`` of the restricted model means class ``indices[j]`` of
    the original one, so data must use the subset's own label space (0..k-1 in
    the order of ``indices``).
    """
    idx = [int(i) for i in indices]
    name, fc = find_classifier(model)
    if not idx:
        raise ValueError("restrict_classifier: indices is empty")
    if len(set(idx)) != len(idx):
        raise ValueError(f"restrict_classifier: duplicate indices {idx}")
    bad = [i for i in idx if not 0 <= i < fc.out_features]
    if bad:
        raise ValueError(f"restrict_classifier: indices {bad[:5]} outside 0..{fc.out_features - 1} of {name}")
    new = nn.Linear(fc.in_features, len(idx), bias=fc.bias is not None,
                    device=fc.weight.device, dtype=fc.weight.dtype)
    with torch.no_grad():
        sel = torch.tensor(idx, device=fc.weight.device)
        new.weight.copy_(fc.weight.index_select(0, sel))
        if fc.bias is not None:
            new.bias.copy_(fc.bias.index_select(0, sel))
    _set_module(model, name, new)
    log.info("restricted classifier %s from %d to %d classes", name, fc.out_features, len(idx))
    return model


class FullHead:
    """The starting model's full classifier, for scoring a class-subset model over every class it knew.

    ``weight`` ``[N, D]`` and ``bias`` ``[N]`` are the final ``nn.Linear`` of the starting model (e.g. the
    1000 ImageNet-1k rows); ``rows[j]`` is the row of the current model's output ``j`` (the subset's classes,
    as :func:`restrict_classifier` kept them).  :meth:`applied` swaps, for the duration of a block, the
    model's final linear layer (``k`` outputs) for a full one: the current ``k`` rows at ``rows``, the
    starting model's other ``N - k`` rows elsewhere, so the scoring loss is the cross-entropy over all
    ``N`` classes of the current network (the paper's sensitivity, sec. 3.3.5: "averaged over all images
    in the training data").  The current rows are shared, not copied: gradients reach the real weights.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows):
        self.weight = weight.detach().to("cpu").clone()
        self.bias = None if bias is None else bias.detach().to("cpu").clone()
        self.rows = [int(r) for r in rows]
        if len(set(self.rows)) != len(self.rows) or not all(0 <= r < self.weight.shape[0] for r in self.rows):
            raise ValueError(f"FullHead: rows must be distinct rows of the {self.weight.shape[0]}-row classifier")

    @classmethod
    def of(cls, model: nn.Module, rows) -> "FullHead":
        """The full head of ``model`` (before :func:`restrict_classifier` keeps ``rows``)."""
        _, fc = find_classifier(model)
        return cls(fc.weight, fc.bias, rows)

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def applied(self, model: nn.Module):
        return _FullHeadSwap(self, model)


class _FullHeadSwap:
    def __init__(self, head: FullHead, model: nn.Module):
        self.head, self.model = head, model

    def __enter__(self):
        h = self.head
        self.name, fc = find_classifier(self.model)
        if fc.out_features != len(h.rows) or fc.in_features != h.weight.shape[1]:
            raise ValueError(f"scoring with the full classifier needs the model's final layer {self.name!r} to have "
                             f"{len(h.rows)} outputs and {h.weight.shape[1]} inputs as when it was restricted; it has "
                             f"{fc.out_features} x {fc.in_features} (the layers feeding it were pruned): score with "
                             "the cell's own head (score_head = \"cell\") or protect those layers")
        self.fc = fc
        _set_module(self.model, self.name, _ScatterLinear(h, fc))
        return self.model

    def __exit__(self, *exc):
        _set_module(self.model, self.name, self.fc)
        return False


class _ScatterLinear(nn.Module):
    """Logits over all ``N`` classes: column ``rows[j]`` is the current layer's output ``j``; the other
    columns come from the starting model's rows (frozen buffers)."""

    def __init__(self, head: FullHead, current: nn.Linear):
        super().__init__()
        w = current.weight
        keep = torch.ones(head.num_classes, dtype=torch.bool)
        keep[head.rows] = False
        other = torch.nonzero(keep).flatten()
        order = torch.cat([torch.tensor(head.rows, dtype=torch.long), other])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        self.current = current
        self.register_buffer("other_w", head.weight[other].to(w.device, w.dtype), persistent=False)
        self.register_buffer("other_b", None if head.bias is None else head.bias[other].to(w.device, w.dtype),
                             persistent=False)
        self.register_buffer("inverse", inverse.to(w.device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        other = nn.functional.linear(x, self.other_w.to(x.dtype),
                                     None if self.other_b is None else self.other_b.to(x.dtype))
        return torch.cat([self.current(x), other], dim=1).index_select(1, self.inverse)
