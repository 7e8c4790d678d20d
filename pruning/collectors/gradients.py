"""The ``"per_image_grad"`` and ``"batch_grad"`` passes: gradient statistics of the loss with respect to each
target filter.

The loss is cross-entropy of the model's logits against the batch labels; the model is in eval mode
(BatchNorm uses running statistics, no dropout), so the loss of an image does not depend on the other
images of its batch.  For filter ``c`` of a conv with weight ``W[c, :, :, :]``:

Per image (``collect_per_image``, criteria ``sensitivity`` / ``class_specific``):
    ``l1_image[c] = sum_n || d loss(x_n) / d W[c] ||_1``, summed over the N images; the criterion divides
    by N.  Computed with ``torch.func``: ``vmap`` over the batch of ``grad`` of the single-image loss,
    i.e. one vectorised backward per batch (``chunk_size`` images at a time bounds memory).
Per batch (``collect_batch``, criteria ``sensitivity_batch`` / ``taylor``), with ``g = d L_B / d W``
the gradient of the batch-mean loss ``L_B`` (one ordinary backward per batch):
    ``l1_batch[c] = sum_B || g[c] ||_1`` and ``taylor[c] = sum_B ( sum_k g[c]_k W[c]_k + g_b[c] b[c] )^2``
    (bias term when the conv has a bias); the criteria divide by the number of batches.
Accumulators stay on the device; ``torch.autograd.grad`` is used, so no ``.grad`` of the model is touched.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, Iterable, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import LayerRef
from ..registry import register_pass


@dataclasses.dataclass
class GradientStats:
    """Per-layer gradient accumulators (definitions in the module docstring)."""

    num_images: int = 0
    num_batches: int = 0
    l1_image: Optional[torch.Tensor] = None
    l1_batch: Optional[torch.Tensor] = None
    taylor: Optional[torch.Tensor] = None

    def _check(self) -> None:
        if self.num_images == 0:
            raise ValueError("no images were seen: the data is empty (or no image has a label in `classes`)")

    @staticmethod
    def _add(total: Optional[torch.Tensor], value: torch.Tensor) -> torch.Tensor:
        value = value.to(torch.float64)
        return value if total is None else total + value


@contextlib.contextmanager
def _requires_grad(params: List[nn.Parameter]) -> Iterator[None]:
    old = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, old):
            p.requires_grad_(flag)


def _check_labels(labels) -> torch.Tensor:
    if labels is None:
        raise ValueError("gradient criteria need labelled data: `data` must yield (images, labels) batches")
    return labels


def collect_per_image(model: nn.Module, refs: List[LayerRef], batches: Iterable,
                      chunk_size: Optional[int] = None) -> Dict[str, GradientStats]:
    """Sum over images of the l1 norm of each filter's per-image loss gradient (module docstring)."""
    stats = {ref.name: GradientStats() for ref in refs}
    keys = {f"{ref.name}.weight": ref.name for ref in refs}
    params = {key: ref.conv.weight.detach() for key, ref in zip(keys, refs)}

    def loss_one(p, x, y):
        out = torch.func.functional_call(model, p, (x.unsqueeze(0),), strict=False)
        return F.cross_entropy(out, y.unsqueeze(0))

    grad_fn = torch.func.grad(loss_one)

    def l1_one(x, y):
        grads = grad_fn(params, x, y)
        return {key: g.abs().sum(dim=tuple(range(1, g.dim()))) for key, g in grads.items()}

    per_batch = torch.func.vmap(l1_one, in_dims=(0, 0), chunk_size=chunk_size)
    for images, labels in batches:
        labels = _check_labels(labels)
        with torch.no_grad():  # grad() ignores an outer no_grad; this stops a graph on the other parameters
            l1 = per_batch(images, labels)
        for key, name in keys.items():
            st = stats[name]
            st.l1_image = GradientStats._add(st.l1_image, l1[key].sum(dim=0, dtype=torch.float64))
            st.num_images += images.shape[0]
            st.num_batches += 1
    return stats


def _batch_grads(model: nn.Module, params: List[nn.Parameter], images: torch.Tensor, labels: torch.Tensor,
                 micro_batch: Optional[int]) -> List[torch.Tensor]:
    """``d L_B / d params`` for the mean cross-entropy ``L_B`` of the whole batch, computed in pieces of at
    most ``micro_batch`` images (sum of each piece's summed-loss gradient, divided by the batch size)."""
    n = images.shape[0]
    step = n if micro_batch is None else int(micro_batch)
    total = None
    for x, y in zip(images.split(step), labels.split(step)):
        loss = F.cross_entropy(model(x), y, reduction="sum") / n
        grads = torch.autograd.grad(loss, params)
        total = list(grads) if total is None else [t + g for t, g in zip(total, grads)]
    return total


def collect_batch(model: nn.Module, refs: List[LayerRef], batches: Iterable,
                  micro_batch: Optional[int] = None) -> Dict[str, GradientStats]:
    """Per-batch gradient l1 norms and first-order Taylor terms (module docstring).  A batch is one batch of
    ``batches``; ``micro_batch`` only bounds the images per backward (the gradient is accumulated)."""
    stats = {ref.name: GradientStats() for ref in refs}
    params: List[nn.Parameter] = []
    for ref in refs:
        params.append(ref.conv.weight)
        if ref.conv.bias is not None:
            params.append(ref.conv.bias)
    with _requires_grad(params), torch.enable_grad():
        for images, labels in batches:
            labels = _check_labels(labels)
            grads = dict(zip(map(id, params), _batch_grads(model, params, images, labels, micro_batch)))
            for ref in refs:
                w = ref.conv.weight
                g = grads[id(w)]
                dims = tuple(range(1, g.dim()))
                first_order = (g * w.detach()).sum(dim=dims, dtype=torch.float64)
                if ref.conv.bias is not None:
                    first_order = first_order + (grads[id(ref.conv.bias)] * ref.conv.bias.detach()).double()
                st = stats[ref.name]
                st.l1_batch = GradientStats._add(st.l1_batch, g.abs().sum(dim=dims, dtype=torch.float64))
                st.taylor = GradientStats._add(st.taylor, first_order.pow(2))
                st.num_images += images.shape[0]
                st.num_batches += 1
    return stats


@register_pass("per_image_grad")
def per_image_pass(model, refs, data, group, options, seed):
    """Per-image gradients over the pieces of the data, ``chunk_size`` the smallest the group asks for."""
    chunks = {options[c.name]["chunk_size"] for c in group}
    stats = collect_per_image(model, refs, data.pieces(), chunk_size=min(chunks, key=lambda c: c or 1 << 62))
    return stats, stats[refs[0].name].num_images


@register_pass("batch_grad")
def batch_pass(model, refs, data, group, options, seed):
    """Per-batch gradients over whole batches of the data (accumulated over pieces of ``micro_batch``)."""
    stats = collect_batch(model, refs, data.batches(), micro_batch=data.micro_batch)
    return stats, stats[refs[0].name].num_images
