"""The linear filter ensemble criterion (Sándor et al. 2020); its statistics are the ``"masks"`` pass
(:mod:`pruning.collectors.masks`, where the exact procedure is)."""
from __future__ import annotations

from ..registry import register


@register("linear_ensemble", "masks", equivariant=False,
          defaults={"num_masks": 128, "drop_prob": 0.1, "ridge": 1e-3, "max_images": 256})
def linear_ensemble(layer, stats, options, seed):
    """``beta[f]``: the coefficient of filter f in a ridge-fitted linear additive model of the loss of
    randomly masked networks, ``L[k] ~ b0 + sum_f beta[f] z[k, f]`` with ``z[k, f] = 1`` when mask k
    disables filter f (Sándor et al. 2020; exact procedure in :mod:`pruning.collectors.masks`)."""
    return stats.beta
