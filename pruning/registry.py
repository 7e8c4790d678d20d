"""The criterion registry: every filter-importance criterion is a small callable registered by name.

A criterion is ``fn(layer: LayerRef, stats, options: dict, seed: int) -> Tensor``: one score per output
filter of the conv ``layer``, as a 1-D tensor; **higher = keep**.  ``stats`` is what the criterion
*needs* (``Criterion.needs``), collected once by :mod:`pruning.score` for all target layers and all
requested criteria of that kind:

``"weights"``
    nothing (``stats`` is None): the layer's parameters (conv, following BatchNorm) are on ``layer``.
``"activations"``
    an ``ActivationStats`` of the feature map the filter produces, after its BatchNorm and activation
    when they follow it (:mod:`pruning.stats`; one forward pass for all activation criteria).
``"per_image_grad"`` / ``"batch_grad"``
    a ``GradientStats`` (:mod:`pruning.gradients`): per-image or per-batch loss gradients.
``"masks"``
    an ``EnsembleStats``: losses of randomly masked networks (:mod:`pruning.criteria.ensemble`).

The registry refuses duplicate names, and an unknown name raises a ``KeyError`` that lists what exists.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping

NEEDS = ("weights", "activations", "per_image_grad", "batch_grad", "masks")


@dataclasses.dataclass(frozen=True)
class Criterion:
    """One registered criterion.

    ``equivariant`` is False for criteria whose score for a filter depends on its position in the layer
    (``random``: seeded per index; ``linear_ensemble``: random masks are drawn per index), so the
    "scores permute with the filters" invariant does not apply to them.
    ``requires_classes`` marks criteria that must be given a class subset (``class_specific``).
    ``defaults`` are the criterion's options and their default values; unknown options are refused.
    """

    name: str
    needs: str
    fn: Callable[..., Any]
    doc: str
    equivariant: bool = True
    requires_classes: bool = False
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check_options(self, options: Mapping[str, Any] | None) -> Dict[str, Any]:
        """Merge ``options`` over the defaults; an unknown key is a ``ValueError`` listing the valid ones."""
        merged = dict(self.defaults)
        for key, value in (options or {}).items():
            if key not in self.defaults:
                valid = ", ".join(sorted(self.defaults)) or "(none)"
                raise ValueError(f"criterion {self.name!r} has no option {key!r}; valid options: {valid}")
            merged[key] = value
        return merged


_REGISTRY: Dict[str, Criterion] = {}


def register(name: str, needs: str, *, equivariant: bool = True, requires_classes: bool = False,
             defaults: Mapping[str, Any] | None = None) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as criterion ``name``; a second registration of a name is refused."""
    if needs not in NEEDS:
        raise ValueError(f"needs={needs!r} is not one of {', '.join(NEEDS)}")

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise KeyError(f"criterion {name!r} is already registered (by {_REGISTRY[name].fn.__module__}); "
                           "choose another name")
        doc = (fn.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"criterion {name!r} needs a docstring giving its exact definition")
        _REGISTRY[name] = Criterion(name=name, needs=needs, fn=fn, doc=doc, equivariant=equivariant,
                                    requires_classes=requires_classes, defaults=dict(defaults or {}))
        return fn

    return deco


def _ensure_loaded() -> None:
    from . import criteria  # noqa: F401  (registers the built-in criteria on import)


def get_criterion(name: str) -> Criterion:
    """The registered criterion ``name``; ``KeyError`` listing the available names on a miss."""
    _ensure_loaded()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise KeyError(f"no criterion {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_criteria() -> List[str]:
    """Names of all registered criteria, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)
