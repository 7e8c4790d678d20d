"""The ``"activations"`` pass: activation statistics for every target layer, collected by forward hooks in one
pass over the data (all activation criteria share it).

For a target conv with ``C`` filters, let ``a[n, c, h, w]`` be the feature map observed at its site
(after its BatchNorm and activation when they follow it; :mod:`pruning.layers`) for image ``n``, and
``s[n, c] = mean_{h,w} a[n, c, h, w]`` its spatial average (``Tensor.mean`` over the positions, in the
activation's dtype, then widened to float64 exactly).  Over the ``N`` images seen, the statistics are
(everything stays on the model's device; nothing is read on the host per batch):

``sum_mean[c]    = sum_n s[n, c]``                                   (float64)
``sum_nonzero[c] = sum_n #{(h, w): a[n, c, h, w] != 0} / (H W)``   (float64; every image has the same H W,
                   so ``sum_nonzero / N`` is the fraction of non-zero activations over images and positions)
``hist_b[c, j] = #{n: s[n, c] falls in bin j}``        (int64, one histogram per requested bin count b)

**Histograms (entropy, scaled entropy).**  The bins of filter ``c`` are ``b`` equal-width bins over the
range of its average output over **all** ``N`` scoring images, ``[min_n s[n, c], max_n s[n, c]]``, and
``hist_b[c] == numpy.histogram(s[:, c], bins=b)[0]`` exactly, with ``s`` in float64: the edges are
``numpy.linspace(lo, hi, b + 1)``, every bin is half-open ``[e_j, e_{j+1})`` except the last, which also
holds the maximum; where ``min == max`` the range is ``(min - 0.5, max + 0.5)`` (all images in the middle
bin).  Bin assignment reproduces numpy's arithmetic step by step (index ``trunc((s - lo) / (hi - lo) * b)``,
``b`` moved to ``b - 1``, then one step down where ``s`` is below the computed left edge and one step up
where it is at or above the computed right edge, except in the last bin), so values on interior edges and
on the maximum land where numpy puts them.  The counts depend only on the values ``s`` of the images
seen, not on how they were split into batches (batch size, micro-batches) nor on their order.  (numpy
refuses non-finite values and a range too narrow for ``b`` distinct edges; here a non-finite ``s`` raises
``ValueError``, and a too-narrow range, impossible for float32 activations with fewer than 2**29 bins,
still gets numpy's index arithmetic.)  ``entropy(b)`` is ``-sum_j p_j log p_j`` with ``p_j = hist_b[c, j] / N``
(natural log, ``0 log 0 = 0``).

Because the range is known only after the last image, the per-image averages ``s`` are **stored** when
histograms were requested (``bins`` non-empty): ``N x C`` values on the device, float32 for float16 /
bfloat16 / float32 activations (lossless: they are values of that dtype) and float64 otherwise, i.e.
``4 N C`` bytes per layer (``8 N C`` for a float64 model), summed over the target layers: 1.28M images x
512 filters x 4 B = 2.6 GB for one layer; VGG-16's 13 convs (4224 filters) take 1.7 GB for 100k images
and 21.6 GB for all 1.28M ImageNet training images.  Per batch they are only appended (every ``_BLOCK``
batches are concatenated into one block on the device), with no host synchronisation.  The min/max,
edges and histograms are computed once, lazily, when :meth:`ActivationStats.entropy` (or
:meth:`~ActivationStats.histogram`) is first asked for a bin count, with one host read per layer (the
check that the values are finite) and temporaries of about 60 bytes a value for ``_CHUNK`` values at a
time; they are cached until the next :meth:`~ActivationStats.update`.  Without ``bins`` nothing is stored.
The sums are float64 accumulations of per-image values, so a different batching changes only their
rounding (about 1e-16 relative).
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, List, Sequence

import torch

from ..layers import LayerRef
from ..registry import register_pass


_CHUNK = 1 << 22  # values (images x filters) processed at once by the lazy histogram computation
_BLOCK = 64  # stored per-batch averages are concatenated into one block every _BLOCK batches


def _device_scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a float64 tensor on ``like``'s device.  Used as a divisor: CUDA divides by a host
    (Python / CPU) scalar as a multiplication by its reciprocal, which is not numpy's correctly rounded
    division; a device tensor gets the true division everywhere."""
    return torch.full((1,), float(value), dtype=torch.float64, device=like.device)


def histogram_edges(lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Per row ``c``, ``numpy.histogram``'s edges for data with min ``lo[c]`` and max ``hi[c]`` (float64,
    shape ``[C, bins + 1]``): the range widened to ``(lo - 0.5, hi + 0.5)`` where ``lo == hi``, then
    ``numpy.linspace(lo, hi, bins + 1)`` computed as numpy does (``i * step + lo``, ``step = (hi - lo) / bins``,
    or ``i / bins * (hi - lo) + lo`` where the step underflows to 0; the last edge set to ``hi``)."""
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    same = lo == hi
    first = torch.where(same, lo - 0.5, lo)
    last = torch.where(same, hi + 0.5, hi)
    delta = last - first
    div = _device_scalar(bins, delta)
    step = delta / div
    i = torch.arange(bins + 1, dtype=torch.float64, device=lo.device)
    y = torch.where((step == 0)[:, None], (i / div)[None, :] * delta[:, None], i[None, :] * step[:, None])
    y = y + first[:, None]
    y[:, bins] = last
    return y


def histogram_indices(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin index (int64) of every ``x[n, c]`` (float64) in row ``c`` of ``edges`` (:func:`histogram_edges`),
    with numpy's equal-width fast path: ``trunc((x - e_0) / (e_b - e_0) * b)``, the value ``b`` moved to
    ``b - 1``, then one step down where ``x < edges[idx]`` and one step up where ``x >= edges[idx + 1]`` and
    ``idx != b - 1``.  Assumes ``e_0 <= x <= e_b`` (true for the data the edges were made from)."""
    bins = edges.shape[1] - 1
    first, last = edges[:, 0], edges[:, bins]
    f = (x - first) / (last - first) * bins
    idx = f.to(torch.int64)  # truncation toward zero, like numpy's astype(intp); f >= 0
    idx = idx - (idx == bins).to(torch.int64)
    cols = edges.t().contiguous()  # cols[j, c] = edges[c, j]; gather(cols, 0, idx)[n, c] = edges[c, idx[n, c]]
    idx = idx - (x < torch.gather(cols, 0, idx)).to(torch.int64)
    up = (x >= torch.gather(cols, 0, idx + 1)) & (idx != bins - 1)
    return idx + up.to(torch.int64)


class ActivationStats:
    """Statistics of one layer (see the module docstring for the exact definitions)."""

    def __init__(self, num_filters: int, bins: Sequence[int] = ()):
        self.num_filters = num_filters
        self.bins = sorted(set(int(b) for b in bins))
        for b in self.bins:
            if b < 2:
                raise ValueError(f"entropy needs at least 2 bins; got bins={b}")
        self.num_images = 0
        self.sum_mean = None
        self.nonzero = None
        self._blocks: List[torch.Tensor] = []   # stored s, concatenated blocks of batches ([n_i, C] each)
        self._pending: List[torch.Tensor] = []  # stored s of the latest batches, not yet concatenated
        self._range = None                      # cached (min, max) of s per filter, float64
        self._hist: Dict[int, torch.Tensor] = {}  # cached histograms per bin count

    @torch.no_grad()
    def update(self, a: torch.Tensor) -> None:
        """Add a batch ``a`` of shape ``[B, C, H, W]`` (or ``[B, C]``)."""
        if a.dim() == 2:
            a = a[:, :, None, None]
        if a.dim() != 4 or a.shape[1] != self.num_filters:
            raise ValueError(f"expected a feature map [B, {self.num_filters}, H, W]; got {tuple(a.shape)}")
        batch, channels = a.shape[:2]
        # reductions in the activation dtype over one image's positions (fast), accumulated in float64
        s_act = a.mean(dim=(2, 3))
        s = s_act.to(torch.float64)
        nonzero = a.ne(0).to(a.dtype).mean(dim=(2, 3)).sum(dim=0, dtype=torch.float64)
        if self.sum_mean is None:
            self.sum_mean = torch.zeros(channels, dtype=torch.float64, device=a.device)
            self.nonzero = torch.zeros(channels, dtype=torch.float64, device=a.device)
        self.sum_mean += s.sum(dim=0)
        self.nonzero += nonzero
        self.num_images += batch
        if self.bins and batch:
            lossless32 = s_act.dtype in (torch.float16, torch.bfloat16, torch.float32)
            self._pending.append(s_act.to(torch.float32) if lossless32 else s)
            if len(self._pending) >= _BLOCK:
                self._flush()
            self._range = None
            self._hist = {}

    def _flush(self) -> None:
        if self._pending:
            block = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
            self._blocks.append(block)
            self._pending = []

    def _chunks(self) -> Iterator[torch.Tensor]:
        """The stored ``s`` in float64, ``[n, C]`` pieces of about ``_CHUNK`` values, in image order."""
        self._flush()
        rows = max(1, _CHUNK // max(1, self.num_filters))
        for block in self._blocks:
            for start in range(0, block.shape[0], rows):
                yield block[start:start + rows].to(torch.float64)

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

    def _need(self, bins: int) -> None:
        self._check()
        if bins not in self.bins:
            raise ValueError(f"no histogram with {bins} bins was collected (have {self.bins})")

    @torch.no_grad()
    def value_range(self) -> tuple:
        """``(min_n s[n, c], max_n s[n, c])`` over all images seen, float64 ``[C]`` each (needs ``bins``)."""
        self._check()
        if not self.bins:
            raise ValueError("the per-image averages are stored only when histogram bins were requested")
        if self._range is None:
            lo = hi = None
            for x in self._chunks():
                x_lo, x_hi = x.amin(dim=0), x.amax(dim=0)
                lo = x_lo if lo is None else torch.minimum(lo, x_lo)
                hi = x_hi if hi is None else torch.maximum(hi, x_hi)
            if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):  # one host read per layer
                raise ValueError("the average activation of a filter is not finite (inf or nan): no histogram")
            self._range = (lo, hi)
        return self._range

    def edges(self, bins: int) -> torch.Tensor:
        """Bin edges ``[C, bins + 1]`` (float64): ``numpy.histogram(s[:, c], bins)[1]`` for every filter."""
        self._need(bins)
        lo, hi = self.value_range()
        return histogram_edges(lo, hi, bins)

    @torch.no_grad()
    def histogram(self, bins: int) -> torch.Tensor:
        """``hist_b`` ``[C, bins]`` (int64): ``numpy.histogram(s[:, c], bins)[0]`` for every filter."""
        self._need(bins)
        if bins not in self._hist:
            edges = self.edges(bins)
            hist = torch.zeros(self.num_filters * bins, dtype=torch.int64, device=edges.device)
            offset = torch.arange(self.num_filters, device=edges.device) * bins
            for x in self._chunks():
                flat = (histogram_indices(x, edges) + offset).reshape(-1)
                # index_add_, not bincount: CUDA's bincount reads the input's max on the host
                hist.index_add_(0, flat, torch.ones_like(flat))
            self._hist[bins] = hist.view(self.num_filters, bins)
        return self._hist[bins]

    @property
    def hist(self) -> Dict[int, torch.Tensor]:
        """``{b: histogram(b)}`` for every requested bin count."""
        return {b: self.histogram(b) for b in self.bins}

    def entropy(self, bins: int) -> torch.Tensor:
        """``-sum_j p_j log p_j`` (natural log, ``0 log 0 = 0``), ``p_j = hist_b[c, j] / N``."""
        hist = self.histogram(bins)
        p = hist.to(torch.float64) / _device_scalar(self.num_images, hist)
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


def _check_sites(group, refs: List[LayerRef]) -> None:
    """Activation criteria observe the map after each filter's activation; a conv with none after it (a
    ResNet ``conv3`` or ``downsample`` conv, whose BN output goes into the residual add) would give
    meaningless scores (APoZ: no zeros at all, so every filter ties and the lowest indices are kept)."""
    bare = [ref.name for ref in refs if not ref.has_activation]
    if bare:
        names = ", ".join(c.name for c in group)
        raise ValueError(f"criterion {names} scores the feature map after each filter's activation, but "
                         f"{', '.join(bare)} {'has' if len(bare) == 1 else 'have'} no activation after "
                         "the conv/BatchNorm (the output goes to a residual add or straight on); prune such "
                         "layers with a weight or gradient criterion (l1, sensitivity, taylor, ...) or choose "
                         "layers that are followed by an activation (e.g. protocol resnet50-16/-32)")


@register_pass("activations")
def activations_pass(model, refs, data, group, options, seed):
    """One forward pass over the pieces of the data with every histogram bin count the group asks for."""
    _check_sites(group, refs)
    bins = [int(options[c.name]["bins"]) for c in group if "bins" in options[c.name]]
    stats = collect_activations(model, refs, data.pieces(), bins=bins)
    return stats, stats[refs[0].name].num_images
