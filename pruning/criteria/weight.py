"""Criteria computed from a layer's parameters alone (no data)."""
from __future__ import annotations

import zlib

import torch

from ..registry import register


def _filters(layer) -> torch.Tensor:
    """The conv weight as ``[C_out, fan_in]`` float64 (the one shared accessor for filter weights)."""
    w = layer.conv.weight.detach()
    return w.reshape(w.shape[0], -1).to(torch.float64)


@register("random", "weights", equivariant=False)
def random_scores(layer, stats, options, seed):
    """Uniform random scores in [0, 1) from a generator seeded by ``seed`` and the layer name
    (``seed * 1_000_003 + crc32(name)``): reproducible, and different for each layer."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(layer.name.encode()))
    return torch.rand(layer.num_filters, generator=gen, dtype=torch.float64)


@register("l1", "weights")
def l1_norm(layer, stats, options, seed):
    """``sum_k |W[c]_k|``: the l1 norm of filter c's weights (Li et al. 2017, "Pruning Filters for
    Efficient ConvNets"); the bias is not included."""
    return _filters(layer).abs().sum(dim=1)


@register("l2", "weights")
def l2_norm(layer, stats, options, seed):
    """``sqrt(sum_k W[c]_k^2)``: the l2 norm of filter c's weights (Li et al. 2017)."""
    return _filters(layer).pow(2).sum(dim=1).sqrt()


@register("fpgm", "weights")
def fpgm(layer, stats, options, seed):
    """``sum_j ||W[c] - W[j]||_2`` over the layer's filters j (He et al. 2019, "Filter Pruning via
    Geometric Median"): the filter minimising it is the one closest to the geometric median and the
    most replaceable, so a larger total distance = keep."""
    w = _filters(layer)
    return torch.cdist(w, w).sum(dim=1)


@register("bn_scale", "weights")
def bn_scale(layer, stats, options, seed):
    """``|gamma[c]|`` of the BatchNorm2d that directly consumes the conv's output (Liu et al. 2017,
    "Network Slimming").  A conv without such an affine BatchNorm is refused (ValueError)."""
    bn = layer.bn
    if bn is None or bn.weight is None:
        raise ValueError(f"criterion 'bn_scale' needs an affine BatchNorm2d right after {layer.name!r}; "
                         "it has none (VGG without BN, DenseNet's pre-activation convs): use another criterion")
    return bn.weight.detach().to(torch.float64).abs()
