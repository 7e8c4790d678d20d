"""Criteria computed from loss gradients (:mod:`pruning.collectors.gradients`); cross-entropy loss, eval mode."""
from __future__ import annotations

from ..registry import register


@register("sensitivity", "per_image_grad", defaults={"chunk_size": None})
def sensitivity(layer, stats, options, seed):
    """``(1/N) sum_n || d loss(x_n) / d W[c] ||_1``: the l1 norm of the gradient of image n's loss with
    respect to filter c's weights, computed per image and averaged over the N images (the paper's item 5).
    ``chunk_size`` bounds how many per-image gradients are held at once (None = the whole batch)."""
    stats._check()
    return stats.l1_image / stats.num_images


@register("class_specific", "per_image_grad", requires_classes=True, defaults={"chunk_size": None})
def class_specific(layer, stats, options, seed):
    """``sensitivity`` averaged over only the images whose label is in the given class subset
    (``classes=``, required), e.g. the 52 ImageNet-52P classes for a 1000-class model (the paper's item 7)."""
    stats._check()
    return stats.l1_image / stats.num_images


@register("sensitivity_batch", "batch_grad")
def sensitivity_batch(layer, stats, options, seed):
    """``(1/B) sum_b || d L_b / d W[c] ||_1`` with ``L_b`` the mean loss of batch b and B batches: the
    cheaper per-batch variant of ``sensitivity`` (gradients of images in a batch may cancel, so it is
    not the same quantity)."""
    stats._check()
    return stats.l1_batch / stats.num_batches


@register("taylor", "batch_grad")
def taylor(layer, stats, options, seed):
    """``(1/B) sum_b ( sum_k g[c]_k W[c]_k + g_bias[c] bias[c] )^2`` with g the gradient of batch b's
    mean loss: the first-order Taylor estimate of the squared loss change when filter c is removed,
    averaged over batches (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning")."""
    stats._check()
    return stats.taylor / stats.num_batches
