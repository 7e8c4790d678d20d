"""Architectures of the ``scratch`` and ``reduced`` cells, and the widths Algorithm 1 leaves.

:func:`first_plan` keeps the first ``n - floor(ratio n)`` filters of each target conv (the widths of
Algorithm 1 at ``ratio``: :func:`pruning.select_filters` on decreasing scores); :func:`match_reduced`
finds the uniform ratio whose network has the pruned architecture's parameter count (Crowley et al., 003);
:func:`reduce` builds a cell's architecture, re-initialised (seeded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .grid import Cell

def first_plan(model, names, ratio: float, lc, example=None) -> dict:
    """``{conv: kept indices}`` keeping the first ``n - floor(ratio n)`` filters of each conv in ``names``
    (Algorithm 1's widths at ``ratio``: ``pruning.select_filters`` on decreasing scores; a conv feeding grouped
    convs keeps the first filters of each of its equal blocks, :func:`pruning.channel_groups`)."""
    import pruning

    convs = dict(model.named_modules())
    scores = {n: torch.arange(convs[n].out_channels, 0, -1, dtype=torch.float32) for n in names}
    plan = pruning.select_filters(scores, ratio, round_to=lc.round_to, min_keep=lc.min_keep,
                                  groups=pruning.channel_groups(model, list(names), example))
    return {k: [int(i) for i in v] for k, v in dict(plan).items()}


def first_filters(model, names, ratio: float, lc, example):
    """:func:`first_plan` applied to ``model``, in place (returns it)."""
    import pruning

    pruning.apply_plan(model, first_plan(model, names, ratio, lc, example), example)
    return model


def target_names(model, layers) -> list:
    import pruning
    return pruning.prunable_layers(model, layers) if isinstance(layers, str) else list(layers)


def match_reduced(model, cell: Cell, example, iterations: int = 40) -> dict:
    """The uniform ratio ``r`` for a ``reduced`` cell (Crowley et al., 003): every prunable conv (protocol
    ``all``) reduced by the same ``r``, chosen by bisection so that the network's parameter count is the
    closest to that of the *pruned architecture* of the same cell (``layers`` at ``ratio``: what Algorithm 1
    and the ``scratch`` kind leave).  Returns ``{"reduced_ratio", "params_target", "params_matched"}``;
    ``model`` (unpruned) is not modified.  The count is a non-increasing step function of ``r``; the
    network is built (and its parameters counted) once per distinct set of widths the bisection visits."""
    import copy

    from pruning import count_params

    lc = cell.loop_config
    target = count_params(first_filters(copy.deepcopy(model), target_names(model, lc.layers), lc.ratio, lc, example))
    every = target_names(model, "all")
    by_widths: dict[tuple, int] = {}

    def widths(r: float) -> tuple:
        return tuple(len(v) for v in first_plan(model, every, r, lc).values())

    def params_at(r: float) -> int:
        w = widths(r)
        if w not in by_widths:
            by_widths[w] = count_params(first_filters(copy.deepcopy(model), every, r, lc, example))
        return by_widths[w]

    lo, hi = 0.0, 0.999
    if params_at(hi) >= target:
        lo = hi
    for _ in range(iterations):
        if lo == hi or params_at(lo) == target or widths(lo) == widths(hi):
            break
        mid = (lo + hi) / 2
        if params_at(mid) > target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda r: (abs(params_at(r) - target), params_at(r)))
    return {"reduced_ratio": best, "params_target": target, "params_matched": params_at(best)}


def reduce(model, cell: Cell, example, ratio: float | None = None):
    """The architecture of a ``scratch``/``reduced`` cell, re-initialised (seeded): ``scratch`` keeps the
    first filters of the cell's ``layers`` at its ``ratio``; ``reduced`` reduces every prunable conv by
    ``ratio`` (:func:`match_reduced`'s, for the same parameter count as the pruned architecture)."""
    lc = cell.loop_config
    if cell.kind == "reduced":
        first_filters(model, target_names(model, "all"), lc.ratio if ratio is None else ratio, lc, example)
    else:
        first_filters(model, target_names(model, lc.layers), lc.ratio, lc, example)
    torch.manual_seed(cell.seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model
