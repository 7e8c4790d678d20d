"""``score_filters``: one score per output filter for every target layer, for any registered criterion.

Data: ``data`` is an iterable of ``(images, labels)`` batches (a DataLoader, a list of tuples; a bare
image tensor batch is accepted by criteria that need no labels).  ``num_images`` caps the images used
(the last batch is truncated to fit); ``classes`` (labels, ints) keeps only images whose label is in the
set, for every data criterion (``class_specific`` requires it).  The number of images actually used is
returned as ``Scores.num_images`` (the paper's "quantum of data"; 0 for weight criteria).

The model is scored in eval mode (its mode is restored after), on ``device`` if given (the model is moved
there, in place, like ``nn.Module.to``), else on the device of its parameters.  ``micro_batch`` bounds the
images per forward/backward on the device: each batch of ``data`` is computed in pieces of at most that
many images, and the scores do not depend on it beyond float rounding (activation and per-image gradient
statistics are per image; a per-batch gradient, ``taylor``/``sensitivity_batch``, is accumulated over the
pieces of its batch, so a *batch* is always one batch of ``data``).
:func:`score_filters_multi` scores several criteria with one collection per kind of statistics pass (the
passes are registered in :mod:`pruning.registry` by :mod:`pruning.collectors`): all activation criteria
share a single forward pass.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .layers import PROTOCOLS, LayerRef, prunable_layers, resolve_layers
from .registry import get_criterion, get_pass, pass_kinds
from .surgery import channel_groups, eval_mode

log = logging.getLogger(__name__)


class Scores(dict):
    """``{layer name: 1-D float64 CPU tensor}`` plus ``criterion``, ``num_images`` and ``options``, and
    ``channel_groups`` (:func:`pruning.surgery.channel_groups` of the scored layers: ``{layer: G}`` for layers
    feeding grouped convs, which :func:`pruning.select_filters` then prunes evenly over G blocks)."""

    def __init__(self, scores: Mapping[str, torch.Tensor], criterion: str, num_images: int, options: Mapping,
                 channel_groups: Optional[Mapping[str, int]] = None):
        super().__init__(scores)
        self.criterion, self.num_images, self.options = criterion, num_images, dict(options)
        self.channel_groups = dict(channel_groups or {})

    def __repr__(self) -> str:
        return f"Scores(criterion={self.criterion!r}, num_images={self.num_images}, layers={list(self)})"


def _batches(data: Iterable, num_images: Optional[int], classes: Optional[Sequence[int]],
             device: torch.device, dtype: torch.dtype) -> Iterator[tuple]:
    """Yield ``(images, labels)`` on ``device``, filtered by ``classes`` and capped at ``num_images``."""
    wanted = None if classes is None else torch.as_tensor(sorted(set(int(c) for c in classes)), dtype=torch.long)
    seen = 0
    for i, batch in enumerate(data):
        if num_images is not None and seen >= num_images:
            return
        if isinstance(batch, torch.Tensor):
            images, labels = batch, None
        elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
            images, labels = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise ValueError(f"batch {i} of `data` is a {type(batch).__name__}; expected (images, labels)")
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"batch {i}: images must be a [B, C, H, W] tensor; "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        labels = None if labels is None else torch.as_tensor(labels)
        if wanted is not None:
            if labels is None:
                raise ValueError("`classes` was given but `data` yields no labels: yield (images, labels)")
            if wanted.device != labels.device:  # the filter runs where the labels are (no copy to the host)
                wanted = wanted.to(labels.device)
            keep = torch.isin(labels, wanted)
            # host labels (what the loop passes): the check does not wait for the device, and a batch
            # with nothing to drop is not indexed at all
            if not bool(keep.all()):
                images, labels = images[keep.to(images.device)], labels[keep]
        if num_images is not None:
            images = images[: num_images - seen]
            labels = None if labels is None else labels[: num_images - seen]
        if images.shape[0] == 0:
            continue
        seen += images.shape[0]
        images = images.to(device=device, dtype=dtype, non_blocking=True)
        labels = None if labels is None else labels.to(device=device, non_blocking=True)
        yield images, labels


def _pieces(batches: Iterable, micro_batch: Optional[int]) -> Iterator[tuple]:
    """Each ``(images, labels)`` batch split into consecutive pieces of at most ``micro_batch`` images."""
    for images, labels in batches:
        if micro_batch is None or images.shape[0] <= micro_batch:
            yield images, labels
            continue
        for start in range(0, images.shape[0], micro_batch):
            stop = start + micro_batch
            yield images[start:stop], None if labels is None else labels[start:stop]


def _resolve(model: nn.Module, layers: Union[str, Sequence[str]]) -> List[LayerRef]:
    if isinstance(layers, str):
        if layers not in PROTOCOLS:
            raise ValueError(f"layers={layers!r} is neither a list of conv names nor a protocol ({', '.join(PROTOCOLS)})")
        layers = prunable_layers(model, layers)
    if not layers:
        raise ValueError("no layers to score: pass conv names or a protocol")
    return resolve_layers(model, list(layers))


class _ScoringData:
    """The data of one call as the statistics passes read it (:mod:`pruning.registry`): whole batches or
    pieces of at most ``micro_batch`` images, filtered by ``classes`` and capped at ``num_images`` (or at a
    pass's own ``cap`` when the call gives none), on the model's device and in its dtype."""

    def __init__(self, data: Iterable, num_images: Optional[int], classes: Optional[Sequence[int]],
                 device: torch.device, dtype: torch.dtype, micro_batch: Optional[int]):
        self.data, self.num_images, self.classes = data, num_images, classes
        self.device, self.dtype, self.micro_batch = device, dtype, micro_batch

    def batches(self, cap: Optional[int] = None) -> Iterator[tuple]:
        limit = self.num_images if self.num_images is not None else cap
        return _batches(self.data, limit, self.classes, self.device, self.dtype)

    def pieces(self, cap: Optional[int] = None) -> Iterator[tuple]:
        return _pieces(self.batches(cap), self.micro_batch)


def score_filters_multi(model: nn.Module, criteria: Sequence[str], layers: Union[str, Sequence[str]],
                        data: Optional[Iterable] = None, num_images: Optional[int] = None,
                        classes: Optional[Sequence[int]] = None, seed: int = 0,
                        device: Union[str, torch.device, None] = None,
                        options: Optional[Mapping[str, Mapping[str, Any]]] = None,
                        micro_batch: Optional[int] = None) -> Dict[str, Scores]:
    """Score ``layers`` with every criterion in ``criteria``; returns ``{criterion: Scores}``.

    ``options`` maps a criterion name to its options (e.g. ``{"entropy": {"bins": 20}}``).
    ``micro_batch``: at most this many images per forward/backward (module docstring).
    """
    if micro_batch is not None and (not isinstance(micro_batch, int) or micro_batch < 1):
        raise ValueError(f"micro_batch must be a positive int or None; got {micro_batch!r}")
    crits = [get_criterion(name) for name in criteria]
    if len({c.name for c in crits}) != len(crits):
        raise ValueError(f"duplicate criteria in {list(criteria)}")
    options = dict(options or {})
    unknown = set(options) - {c.name for c in crits}
    if unknown:
        raise ValueError(f"options given for criteria not requested: {sorted(unknown)}")
    opts = {c.name: c.check_options(options.get(c.name)) for c in crits}
    if num_images is not None and (not isinstance(num_images, int) or num_images < 1):
        raise ValueError(f"num_images must be a positive int or None; got {num_images!r}")
    for c in crits:
        if c.requires_classes and not classes:
            raise ValueError(f"criterion {c.name!r} needs `classes` (the labels of the class subset to score for)")
    if device is not None:
        model.to(device)
    param = next(model.parameters())
    refs = _resolve(model, layers)
    balance = channel_groups(model, [ref.name for ref in refs])
    needs = sorted({c.needs for c in crits}, key=pass_kinds().index)
    data_needs = [n for n in needs if get_pass(n).needs_data]
    if data_needs and data is None:
        raise ValueError(f"criteria {[c.name for c in crits if c.needs in data_needs]} need `data` "
                         "(an iterable of (images, labels) batches)")
    if len(data_needs) > 1 and iter(data) is data:
        raise ValueError("these criteria need several passes over `data`, but it is a one-shot iterator; "
                         "pass a re-iterable (a DataLoader or a list of batches)")
    scoring_data = _ScoringData(data, num_images, classes, param.device, param.dtype, micro_batch)

    result: Dict[str, Scores] = {}
    with eval_mode(model):
        for need in needs:
            group = [c for c in crits if c.needs == need]
            collected, used = get_pass(need).fn(model, refs, scoring_data, group, opts, seed)
            for c in group:
                scores = {}
                for ref in refs:
                    value = c.fn(ref, collected[ref.name], opts[c.name], seed)
                    value = value.detach().to("cpu", torch.float64).reshape(-1)
                    if value.numel() != ref.num_filters:
                        raise RuntimeError(f"criterion {c.name!r} returned {value.numel()} scores for {ref.name!r} "
                                           f"with {ref.num_filters} filters")
                    scores[ref.name] = value
                result[c.name] = Scores(scores, c.name, used, opts[c.name], balance)
                log.info("scored %d layers with %r on %d images", len(refs), c.name, used)
    return result


def score_filters(model: nn.Module, criterion: str, layers: Union[str, Sequence[str]], data: Optional[Iterable] = None,
                  num_images: Optional[int] = None, classes: Optional[Sequence[int]] = None, seed: int = 0,
                  device: Union[str, torch.device, None] = None, options: Optional[Mapping[str, Any]] = None,
                  micro_batch: Optional[int] = None) -> Scores:
    """Scores of one criterion: ``{layer: 1-D tensor}`` (a :class:`Scores`, with ``.num_images``)."""
    if not isinstance(criterion, str):
        raise ValueError(f"criterion must be a registered name (str); got {type(criterion).__name__}")
    return score_filters_multi(model, [criterion], layers, data=data, num_images=num_images, classes=classes,
                               seed=seed, device=device, options={criterion: options} if options else None,
                               micro_batch=micro_batch)[criterion]
