"""The ``"masks"`` pass: losses of randomly masked networks, fitted by a linear model (Sándor et al. 2020,
"Pruning CNN's with linear filter ensembles"; criterion ``linear_ensemble``).

Sample ``num_masks`` random masks ``z[k, f]`` over *all* target filters f jointly (``z = 1``: filter
disabled, with probability ``drop_prob``, drawn from a CPU generator seeded by ``seed``).  For each mask,
the disabled filters' observed feature maps (after BN and activation, :mod:`pruning.layers`) are set to
zero -- what physical removal does to the network's function -- and the mean cross-entropy loss
``L[k]`` over the same fixed images (at most ``num_images``; ``max_images`` when ``num_images`` is None)
is measured in eval mode.  A linear additive model ``L[k] ~ b0 + sum_f beta[f] z[k, f]`` is fitted by
ridge regression (intercept unpenalised, penalty ``ridge * num_masks``; solved in its dual form, so
more filters than masks is fine).  The score of a filter is its coefficient ``beta[f]``: the loss
increase attributed to disabling it (higher = keep).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, List

import torch
import torch.nn.functional as F

from ..layers import LayerRef
from ..registry import register_pass


class EnsembleStats:
    """The fitted coefficients of one layer (``beta``) and the run's bookkeeping."""

    def __init__(self, beta: torch.Tensor, num_images: int, losses: torch.Tensor):
        self.beta, self.num_images, self.losses = beta, num_images, losses


class _MaskHook:
    def __init__(self):
        self.keep = None  # [1, C, 1, 1] tensor of 0/1, set before each forward

    def __call__(self, module, inputs, output):
        return output * self.keep


@contextlib.contextmanager
def _mask_hooks(refs: List[LayerRef]) -> Iterator[Dict[str, _MaskHook]]:
    masks = {ref.name: _MaskHook() for ref in refs}
    handles = [ref.hook_module.register_forward_hook(masks[ref.name]) for ref in refs]
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()


def collect_masks(model: torch.nn.Module, refs: List[LayerRef], batches: Iterable, options: dict, seed: int
                  ) -> Dict[str, EnsembleStats]:
    """Measure the masked losses and fit the ridge model (module docstring)."""
    num_masks, drop_prob, ridge = int(options["num_masks"]), float(options["drop_prob"]), float(options["ridge"])
    if num_masks < 2 or not 0.0 < drop_prob < 1.0 or ridge <= 0:
        raise ValueError(f"linear_ensemble needs num_masks >= 2, 0 < drop_prob < 1, ridge > 0; got "
                         f"num_masks={num_masks}, drop_prob={drop_prob}, ridge={ridge}")
    wrong = [ref.name for ref in refs if not ref.masks_like_removal()]
    if wrong:
        raise ValueError(f"linear_ensemble: the activation after {wrong} is a function call that does not map 0 to 0 "
                         "(e.g. torch.sigmoid), so zeroing the map before it is not what removing a filter does; "
                         "use the activation as a module (nn.Sigmoid, ...), whose output can be masked")
    cached = [(x, y) for x, y in batches]
    num_images = sum(x.shape[0] for x, _ in cached)
    if num_images == 0:
        raise ValueError("no images were seen: the data is empty (or no image has a label in `classes`)")
    if any(y is None for _, y in cached):
        raise ValueError("linear_ensemble needs labelled data: `data` must yield (images, labels) batches")
    sizes = [ref.num_filters for ref in refs]
    gen = torch.Generator().manual_seed(seed)
    z = (torch.rand(num_masks, sum(sizes), generator=gen, dtype=torch.float64) < drop_prob).to(torch.float64)
    device = cached[0][0].device
    losses = torch.zeros(num_masks, dtype=torch.float64, device=device)
    keep_all = (1.0 - z).to(device)  # one copy to the device (a copy per mask would wait for the device each time)
    with _mask_hooks(refs) as hooks, torch.inference_mode():
        for k in range(num_masks):
            keep = keep_all[k].split(sizes)
            for ref, part in zip(refs, keep):
                hooks[ref.name].keep = part.to(dtype=ref.conv.weight.dtype).view(1, -1, 1, 1)
            for x, y in cached:
                losses[k] += F.cross_entropy(model(x), y, reduction="sum").double()
    losses = losses.cpu() / num_images
    zc = z - z.mean(dim=0)
    lc = losses - losses.mean()
    gram = zc @ zc.T + ridge * num_masks * torch.eye(num_masks, dtype=torch.float64)
    beta = zc.T @ torch.linalg.solve(gram, lc)
    return {ref.name: EnsembleStats(part, num_images, losses) for ref, part in zip(refs, beta.split(sizes))}


@register_pass("masks")
def masks_pass(model, refs, data, group, options, seed):
    """The masked losses over at most ``max_images`` images (when the call sets no cap), one criterion a call."""
    if len(group) != 1:
        raise ValueError("only one mask-based criterion per call")
    opts = options[group[0].name]
    stats = collect_masks(model, refs, data.pieces(opts["max_images"]), opts, seed)
    return stats, stats[refs[0].name].num_images
