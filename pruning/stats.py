"""Activation statistics for every target layer, collected by forward hooks in one pass over the data.

For a target conv with ``C`` filters, let ``a[n, c, h, w]`` be the feature map observed at its site
(after its BatchNorm and activation when they follow it; :mod:`pruning.layers`) for image ``n``, and
``s[n, c] = mean_{h,w} a[n, c, h, w]`` its spatial average.  Over the ``N`` images seen, the
accumulators are (all tensors stay on the model's device; nothing is copied to the host per batch):

``sum_mean[c]    = sum_n s[n, c]``                                   (float64)
``sum_nonzero[c] = sum_n #{(h, w): a[n, c, h, w] != 0} / (H W)``   (float64; every image has the same H W,
                   so ``sum_nonzero / N`` is the fraction of non-zero activations over images and positions)
``hist_b[c, j] = #{n: s[n, c] falls in bin j}``        (int64, one histogram per requested bin count b)

Histogram edges are **fixed from the first batch** so no second pass is needed: per filter,
``lo[c] = min_n s[n, c]`` and ``hi[c] = max_n s[n, c]`` over the first batch, ``b`` equal-width bins on
``[lo, hi]``; bin ``j = floor((s - lo) / (hi - lo) * b)`` clamped to ``[0, b - 1]``, so later values outside
the first batch's range count in the end bins (where ``hi == lo`` the span is taken as 1).  When all data
is one batch this is exactly ``numpy.histogram(s[:, c], bins=b, range=(lo, hi))``.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, List, Sequence

import torch

from .layers import LayerRef


class ActivationStats:
    """Accumulators for one layer (see module docstring for the exact definitions)."""

    def __init__(self, num_filters: int, bins: Sequence[int] = ()):
        self.num_filters = num_filters
        self.bins = sorted(set(int(b) for b in bins))
        for b in self.bins:
            if b < 2:
                raise ValueError(f"entropy needs at least 2 bins; got bins={b}")
        self.num_images = 0
        self.sum_mean = None
        self.nonzero = None
        self.lo = self.hi = None
        self._span = self._offset = None
        self.hist: Dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, a: torch.Tensor) -> None:
        """Add a batch ``a`` of shape ``[B, C, H, W]`` (or ``[B, C]``)."""
        if a.dim() == 2:
            a = a[:, :, None, None]
        if a.dim() != 4 or a.shape[1] != self.num_filters:
            raise ValueError(f"expected a feature map [B, {self.num_filters}, H, W]; got {tuple(a.shape)}")
        batch, channels = a.shape[:2]
        # reductions in the activation dtype over one image's positions (fast), accumulated in float64
        s = a.mean(dim=(2, 3)).to(torch.float64)
        nonzero = a.ne(0).to(a.dtype).mean(dim=(2, 3)).sum(dim=0, dtype=torch.float64)
        if self.sum_mean is None:
            self.sum_mean = torch.zeros(channels, dtype=torch.float64, device=a.device)
            self.nonzero = torch.zeros(channels, dtype=torch.float64, device=a.device)
            if self.bins:
                self.lo = s.min(dim=0).values
                self.hi = s.max(dim=0).values
                for b in self.bins:
                    self.hist[b] = torch.zeros(channels, b, dtype=torch.int64, device=a.device)
        self.sum_mean += s.sum(dim=0)
        self.nonzero += nonzero
        self.num_images += batch
        if self.bins:
            if self._span is None:
                span = self.hi - self.lo
                self._span = torch.where(span > 0, span, torch.ones_like(span))
                self._offset = torch.arange(channels, device=a.device)
            for b in self.bins:
                j = torch.floor((s - self.lo) / self._span * b).clamp_(0, b - 1).long()
                flat = (j + self._offset * b).reshape(-1)
                # index_add_, not bincount: CUDA's bincount reads the input's max on the host (a sync per batch)
                self.hist[b].view(-1).index_add_(0, flat, torch.ones_like(flat))

    def _check(self) -> None:
        if self.num_images == 0:
            raise ValueError("no images were seen: the data is empty (or no image has a label in `classes`)")

    @property
    def mean(self) -> torch.Tensor:
        """Mean activation per filter: ``sum_mean / N`` (= mean over images and positions)."""
        self._check()
        return self.sum_mean / self.num_images

    @property
    def zero_fraction(self) -> torch.Tensor:
        """Average percentage of zeros as a fraction: ``1 - sum_nonzero / N``."""
        self._check()
        return 1.0 - self.nonzero / self.num_images

    def entropy(self, bins: int) -> torch.Tensor:
        """``-sum_j p_j log p_j`` (natural log, ``0 log 0 = 0``), ``p_j = hist_b[c, j] / N``."""
        self._check()
        if bins not in self.hist:
            raise ValueError(f"no histogram with {bins} bins was collected (have {self.bins})")
        p = self.hist[bins].double() / self.num_images
        return -torch.special.xlogy(p, p).sum(dim=1)


class _Hook:
    """Forward hook feeding a site's output (after ``post``) to an :class:`ActivationStats`."""

    def __init__(self, ref: LayerRef, stats: ActivationStats):
        self.post, self.stats = ref.post, stats

    def __call__(self, module, inputs, output):
        a = output if self.post is None else self.post(output)
        self.stats.update(a.detach())


class _SharedActHook:
    """Hooks for a conv whose activation module is shared: the BN hook marks its output tensor, the
    activation hook observes only the call whose input is that tensor (object identity)."""

    def __init__(self, stats: ActivationStats):
        self.stats, self.pending = stats, None

    def mark(self, module, inputs, output):
        self.pending = output

    def __call__(self, module, inputs, output):
        if self.pending is not None and inputs and inputs[0] is self.pending:
            self.pending = None
            self.stats.update(output.detach())


@contextlib.contextmanager
def hooks(refs: Sequence[LayerRef], stats: Dict[str, ActivationStats]) -> Iterator[None]:
    """Register the observation hooks of every layer for the duration of the block."""
    handles = []
    for ref in refs:
        if ref.shared_act is None:
            handles.append(ref.hook_module.register_forward_hook(_Hook(ref, stats[ref.name])))
        else:
            hook = _SharedActHook(stats[ref.name])
            handles.append(ref.hook_module.register_forward_hook(hook.mark))
            handles.append(ref.shared_act.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def collect_activations(model: torch.nn.Module, refs: List[LayerRef], batches: Iterable, bins: Sequence[int] = ()
                        ) -> Dict[str, ActivationStats]:
    """One forward pass (``inference_mode``) over ``batches`` (tensors already on the device) with hooks on
    every layer in ``refs``; returns ``{layer: ActivationStats}``."""
    stats = {ref.name: ActivationStats(ref.num_filters, bins) for ref in refs}
    with hooks(refs, stats), torch.inference_mode():
        for images, _labels in batches:
            model(images)
    return stats
