"""``select_filters``: turn scores into a plan ``{layer: kept filter indices}``.

Per layer (default; the paper's "prune m% of the filters of each layer"): a layer with ``n`` filters keeps
``k = n - floor(ratio * n)`` filters, then ``k`` is rounded **up** to a multiple of ``round_to`` (never
above n) and raised to at least ``min_keep`` (never above n).  The kept filters are the ``k`` highest
scores; ties go to the lower index.  ``ratio`` is a float in [0, 1) or a mapping layer -> ratio.

Global ranking (``global_ranking=True``, ``ratio`` a float): each layer's scores are divided by the
layer's mean absolute score (criteria are not on comparable scales across layers), then the
``floor(ratio * total)`` lowest normalised scores over all layers are pruned, lowest first, skipping a
filter when its layer would drop below ``min_keep``; finally each layer's count is rounded up to a
multiple of ``round_to`` by re-adding its best pruned filters.

Grouped convs (``groups``, a mapping layer -> G; default ``scores.channel_groups`` when the scores come from
:func:`pruning.score_filters`, else none): a layer whose coupled group reaches grouped convs must lose the
same number of filters from each of its G equal contiguous blocks (:func:`pruning.surgery.channel_groups`).
For such a layer the kept count ``k`` (from the rule above, or from the global ranking) is rounded **up** to
a multiple of ``lcm(G, round_to)``, so that ``round_to`` still holds; where that would keep every filter, to a
multiple of G alone (logged: ``round_to`` is then not met for that layer).  Each block keeps its ``k / G``
highest scores (ties: lower index).

The plan lists kept indices sorted ascending; it is plain JSON-serialisable data.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Mapping, Union

import torch

log = logging.getLogger(__name__)


def _check_scores(scores: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping {layer name: 1-D tensor}")
    out = {}
    for name, value in scores.items():
        value = torch.as_tensor(value).detach().to("cpu", torch.float64)
        if value.dim() != 1 or value.numel() == 0:
            raise ValueError(f"scores[{name!r}] must be a non-empty 1-D tensor; got shape {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"scores[{name!r}] has non-finite values (NaN/inf); cannot rank its filters")
        out[name] = value
    return out


def _num_keep(n: int, ratio: float, round_to: int, min_keep: int) -> int:
    k = n - math.floor(ratio * n + 1e-9)
    k = min(n, math.ceil(k / round_to) * round_to)
    return min(n, max(k, min_keep))


def _top(values: torch.Tensor, k: int) -> List[int]:
    order = torch.argsort(-values, stable=True)
    return sorted(int(i) for i in order[:k])


def _check_ratio(name: str, ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"ratio{'' if name is None else f'[{name!r}]'} must be a fraction of filters to prune "
                         f"in [0, 1); got {ratio!r}")
    return float(ratio)


def _check_groups(scores: Dict[str, torch.Tensor], groups) -> Dict[str, int]:
    if not isinstance(groups, Mapping):
        raise ValueError(f"groups must be a mapping {{layer: number of blocks}}; got {type(groups).__name__}")
    out = {}
    for name, g in groups.items():
        if name not in scores:
            continue
        n = scores[name].numel()
        if isinstance(g, bool) or not isinstance(g, int) or g < 1 or n % g:
            raise ValueError(f"groups[{name!r}] must be an int >= 1 dividing its {n} filters; got {g!r}")
        if g > 1:
            out[name] = g
    return out


def _top_balanced(values: torch.Tensor, k: int, blocks: int) -> List[int]:
    """The ``ceil(k / blocks)`` best of each of ``blocks`` equal contiguous blocks (module docstring)."""
    size = values.numel() // blocks
    per = min(size, max(1, math.ceil(k / blocks)))
    return sorted(b * size + i for b in range(blocks) for i in _top(values[b * size:(b + 1) * size], per))


def select_filters(scores: Mapping[str, torch.Tensor], ratio: Union[float, Mapping[str, float]], round_to: int = 1,
                   min_keep: int = 1, global_ranking: bool = False,
                   groups: Union[Mapping[str, int], None] = None) -> Dict[str, List[int]]:
    """The plan keeping the highest-scoring filters (module docstring for the exact rule)."""
    if groups is None:
        groups = getattr(scores, "channel_groups", None) or {}
    scores = _check_scores(scores)
    blocks = _check_groups(scores, groups)
    plan = _select(scores, ratio, round_to, min_keep, global_ranking)
    for name, g in blocks.items():
        n = scores[name].numel()
        # the kept count rounded up to a multiple of both G and round_to (capped at the layer's width)
        step = math.lcm(g, round_to)
        k = step * math.ceil(len(plan[name]) / step)
        if k >= n and len(plan[name]) < n and step > g:  # lcm rounding would prune nothing: G alone
            log.warning("%s: keeping a multiple of both its %d channel groups and round_to=%d would keep all %d "
                        "filters; kept a multiple of %d instead", name, g, round_to, n, g)
            k = g * math.ceil(len(plan[name]) / g)
        plan[name] = _top_balanced(scores[name], min(n, k), g)
    return plan


def _select(scores: Dict[str, torch.Tensor], ratio, round_to: int, min_keep: int, global_ranking: bool
            ) -> Dict[str, List[int]]:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be an int >= 1; got {round_to!r}")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
        raise ValueError(f"min_keep must be an int >= 1; got {min_keep!r}")
    if isinstance(ratio, Mapping):
        if global_ranking:
            raise ValueError("global_ranking needs one ratio (a float), not a per-layer mapping")
        missing = sorted(set(scores) - set(ratio))
        if missing:
            raise ValueError(f"ratio mapping has no entry for layers {missing}")
        ratios = {name: _check_ratio(name, ratio[name]) for name in scores}
    else:
        ratios = {name: _check_ratio(None, ratio) for name in scores}
    if not global_ranking:
        return {name: _top(value, _num_keep(value.numel(), ratios[name], round_to, min_keep))
                for name, value in scores.items()}

    names = list(scores)
    ratio = ratios[names[0]]
    normalised = {}
    for name, value in scores.items():
        scale = value.abs().mean()
        normalised[name] = value / scale if scale > 0 else value
    flat = torch.cat([normalised[n] for n in names])
    layer_of = torch.cat([torch.full((scores[n].numel(),), i) for i, n in enumerate(names)])
    index_of = torch.cat([torch.arange(scores[n].numel()) for n in names])
    total = flat.numel()
    to_prune = math.floor(ratio * total + 1e-9)
    keep_count = {n: scores[n].numel() for n in names}
    pruned = {n: set() for n in names}
    for pos in torch.argsort(flat, stable=True).tolist():
        if to_prune == 0:
            break
        name = names[int(layer_of[pos])]
        if keep_count[name] - 1 < min_keep:
            continue
        pruned[name].add(int(index_of[pos]))
        keep_count[name] -= 1
        to_prune -= 1
    plan = {}
    for name in names:
        n = scores[name].numel()
        kept = set(range(n)) - pruned[name]
        extra = min(n, math.ceil(len(kept) / round_to) * round_to) - len(kept)
        if extra > 0:  # round up: re-add the best pruned filters (ties: lower index)
            back = sorted(pruned[name], key=lambda i: (-float(scores[name][i]), i))[:extra]
            kept.update(back)
        plan[name] = sorted(kept)
    return plan
