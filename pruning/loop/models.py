"""Models for the engine: the model factory (``make_model``, ``register_model``), class-subset classifiers
(``restrict_classifier``) and the starting model's full head for scoring (``FullHead``).

``make_model(name, num_classes)`` returns a torchvision model by name (random
initialisation, or a ``state_dict`` file for pretrained weights: this package
downloads nothing), or ``tinyvgg``: a small VGG-shaped CNN (``features`` of
conv-BN-ReLU blocks with max-pools, then ``classifier``) that trains in seconds
on CPU and is pruned exactly like VGG-16 (its convs are named ``features.<i>``).

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
    """Our own registered names plus every torchvision classification model name."""
    import torchvision  # on first use: it imports PIL, which `import pruning` must not

    return sorted(set(_FACTORIES) | set(torchvision.models.list_models(module=torchvision.models)))


def make_model(name: str, num_classes: int = 1000, weights: str | Path | None = None, seed: int | None = None) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs.

    ``weights``: a ``state_dict`` file (``torch.load(weights_only=True)``) for
    the model *as built* (so a 1000-class checkpoint needs ``num_classes=1000``;
    restrict it afterwards with :func:`restrict_classifier`).  ``seed``: seeds
    the random initialisation (same seed -> identical weights).
    """
    if seed is not None:
        torch.manual_seed(seed)
    if name in _FACTORIES:
        model = _FACTORIES[name](num_classes)
    else:
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            raise ValueError(f"no model {name!r}; available: {', '.join(list_models())}")
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found; give a state_dict saved with torch.save")
        state = read_state_dict(path)  # a ValueError naming the file for anything but a state_dict
        load_weights(model, state, path)
        log.info("loaded weights for %s from %s", name, path)
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
