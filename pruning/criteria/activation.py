"""Criteria computed from activation statistics (:mod:`pruning.collectors.activations`), all collected in one pass.

``a[n, c, h, w]`` is the feature map of filter c after its BatchNorm and activation when they follow it,
``s[n, c]`` its spatial average over positions (h, w) for image n, N the number of images.
"""
from __future__ import annotations

from ..registry import register


@register("mean_activation", "activations")
def mean_activation(layer, stats, options, seed):
    """``(1/N) sum_n s[n, c]``: the mean activation over images and positions (Molchanov et al. 2017;
    the paper's section 3.3 item 1)."""
    return stats.mean


@register("apoz", "activations")
def apoz(layer, stats, options, seed):
    """``1 - APoZ[c]`` with ``APoZ[c] = #{(n, h, w): a[n, c, h, w] == 0} / (N H W)``, the average
    percentage of zeros (Hu et al. 2016) as a fraction, so that fewer zeros = higher = keep."""
    return 1.0 - stats.zero_fraction


@register("entropy", "activations", defaults={"bins": 10})
def entropy(layer, stats, options, seed):
    """``E[c] = -sum_j p[c, j] log p[c, j]`` (natural log, 0 log 0 = 0), ``p[c, j]`` the fraction of the N
    scoring images whose spatial average ``s[n, c]`` lies in bin j of ``bins`` equal-width bins over the
    range ``[min_n s[n, c], max_n s[n, c]]`` of the average output over *all* N images (Luo & Wu 2017; the
    paper's item 3): the counts are exactly ``numpy.histogram(s[:, c], bins=bins)`` (last bin closed; a
    constant filter gets numpy's range ``(v - 0.5, v + 0.5)``, so E = 0), whatever the batching of the
    images.  The averages s are kept on the device until the end (``4 N C`` bytes per layer;
    :mod:`pruning.collectors.activations`)."""
    return stats.entropy(int(options["bins"]))


@register("scaled_entropy", "activations", defaults={"bins": 10})
def scaled_entropy(layer, stats, options, seed):
    """``SE[c] = E[c] * mean[c]``: the ``entropy`` criterion (same bins: over the range of s over all
    scoring images, ``numpy.histogram`` semantics) times the ``mean_activation`` criterion
    ``(1/N) sum_n s[n, c]`` (the paper's item 6)."""
    return stats.entropy(int(options["bins"])) * stats.mean
