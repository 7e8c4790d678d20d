"""The registry: filter-importance criteria by name, and the statistics passes they need by kind.

A **statistics pass** is one collection over the scoring data for all target layers (or none, for
``"weights"``), registered with :func:`register_pass` by the kind it serves.  The built-in passes live in
:mod:`pruning.collectors` (one module per kind, each documenting what it collects):

``"weights"``        no data: the layer's parameters are on the ``LayerRef`` (:mod:`pruning.collectors.weights`)
``"activations"``    one forward pass for every activation criterion (:mod:`pruning.collectors.activations`)
``"per_image_grad"`` per-image loss gradients (:mod:`pruning.collectors.gradients`)
``"batch_grad"``     per-batch loss gradients (:mod:`pruning.collectors.gradients`)
``"masks"``          losses of randomly masked networks (:mod:`pruning.collectors.masks`)

A **criterion** is ``fn(layer: LayerRef, stats, options: dict, seed: int) -> Tensor``: one score per
output filter of the conv ``layer``, as a 1-D tensor; **higher = keep**.  ``stats`` is what its pass
(``Criterion.needs``) collected for that layer; :mod:`pruning.score` runs each needed pass once for all
target layers and all requested criteria of that kind, in the order the passes were registered.

A pass is ``fn(model, refs, data, group, options, seed) -> ({layer name: stats}, num_images)``: ``refs``
the target layers (``LayerRef``), ``group`` the requested criteria of its kind (``Criterion``),
``options`` ``{criterion name: its checked options}``, and ``data`` the scoring data of the call:
``data.batches(cap=None)`` yields whole ``(images, labels)`` batches on the model's device and
``data.pieces(cap=None)`` the same batches in pieces of at most ``data.micro_batch`` images (``cap``: an
image cap used when the call gives none).

This module imports nothing of the library: :mod:`pruning` imports the collectors and then the criteria,
which register themselves here.  Every table refuses a second registration of a name with the same
``ValueError`` (:func:`refuse_duplicate`); an unknown name raises a ``KeyError`` that lists what exists.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Tuple


def refuse_duplicate(kind: str, name: str, table: Mapping[str, Any]) -> None:
    """``ValueError`` when ``name`` is already in ``table``, naming the module that registered it; every
    registry of the library (criteria, statistics passes, :func:`pruning.loop.models.register_model`)
    refuses a second registration this way.  A table's value is the registered function or has it as ``fn``."""
    if name in table:
        first = getattr(table[name], "fn", table[name])
        raise ValueError(f"{kind} {name!r} is already registered (by {first.__module__}); choose another name")


@dataclasses.dataclass(frozen=True)
class StatsPass:
    """One registered kind of statistics pass: ``fn`` collects (module docstring); ``needs_data`` is False
    for a pass that reads no data (``"weights"``)."""

    kind: str
    fn: Callable[..., Tuple[Dict[str, Any], int]]
    doc: str
    needs_data: bool = True


_PASSES: Dict[str, StatsPass] = {}


def register_pass(kind: str, *, needs_data: bool = True) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as the statistics pass of ``kind``; a second one for a kind is refused."""

    def deco(fn: Callable) -> Callable:
        refuse_duplicate("statistics pass", kind, _PASSES)
        _PASSES[kind] = StatsPass(kind=kind, fn=fn, doc=(fn.__doc__ or "").strip(), needs_data=needs_data)
        return fn

    return deco


def get_pass(kind: str) -> StatsPass:
    """The registered statistics pass of ``kind``; ``KeyError`` listing the kinds on a miss."""
    if kind not in _PASSES:
        raise KeyError(f"no statistics pass {kind!r}; available: {', '.join(_PASSES)}")
    return _PASSES[kind]


def pass_kinds() -> List[str]:
    """The kinds of statistics pass, in registration order (the order :mod:`pruning.score` runs them in)."""
    return list(_PASSES)


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
            _check_option_value(self.name, key, value, self.defaults[key])
            merged[key] = value
        return merged


def _check_option_value(criterion: str, key: str, value: Any, default: Any) -> None:
    """An option takes the kind of its default: a positive integer where the default is an integer or None
    (e.g. ``bins``, ``chunk_size``), a number >= 0 where it is a float; a ``ValueError`` naming it otherwise."""
    import numbers

    if isinstance(default, bool) or isinstance(default, str):
        return
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if default is None:
        ok, want = value is None or (integral and value >= 1), \
            "a positive integer or None"
    elif isinstance(default, int):
        ok, want = integral and value >= 1, "a positive integer"
    elif isinstance(default, float):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok, want = real and value >= 0, "a number >= 0"
    else:
        return
    if not ok:
        raise ValueError(f"criterion {criterion!r} option {key}={value!r} is not {want} (default {default!r}); "
                         f"give {key} as {want}")


_REGISTRY: Dict[str, Criterion] = {}


def register(name: str, needs: str, *, equivariant: bool = True, requires_classes: bool = False,
             defaults: Mapping[str, Any] | None = None) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as criterion ``name`` served by the pass ``needs``; a second
    registration of a name is refused."""
    if needs not in _PASSES:
        raise ValueError(f"needs={needs!r} is not one of {', '.join(_PASSES)}")

    def deco(fn: Callable) -> Callable:
        refuse_duplicate("criterion", name, _REGISTRY)
        doc = (fn.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"criterion {name!r} needs a docstring giving its exact definition")
        _REGISTRY[name] = Criterion(name=name, needs=needs, fn=fn, doc=doc, equivariant=equivariant,
                                    requires_classes=requires_classes, defaults=dict(defaults or {}))
        return fn

    return deco


def get_criterion(name: str) -> Criterion:
    """The registered criterion ``name``; ``KeyError`` listing the available names on a miss."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise KeyError(f"no criterion {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_criteria() -> List[str]:
    """Names of all registered criteria, sorted."""
    return sorted(_REGISTRY)
