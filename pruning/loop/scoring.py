"""The engine's scoring: the scoring stream read in batches of the global ``batch_size`` and handed to
:func:`pruning.score_filters` with the run's criterion, options, classes and seed."""

from __future__ import annotations

import contextlib

import torch

from ..score import score_filters


class ScoringBatches:
    """A re-iterable view of one pass of a stream (criteria may iterate more than once), in batches of
    exactly ``batch`` images (the global ``batch_size``; the last may be smaller) whatever the stream
    yields, so per-batch criteria see the same batches on any world size, accumulation and loader.
    Images go to the device, normalised like the training batches; labels stay on the host, where
    ``score_filters`` checks them against the scoring classes without waiting for the device (the
    stream has already kept only those classes) and then copies them over."""

    def __init__(self, stream, pass_index: int, budget, runtime, batch: int):
        self.stream, self.pass_index, self.budget, self.runtime = stream, pass_index, budget, runtime
        self.batch = int(batch)

    def __iter__(self):
        for x, y in rebatch(self.stream.batches(self.pass_index, self.budget), self.batch):
            yield self.runtime.images_to_device(x), y


def rebatch(batches, size: int):
    """``(images, labels)`` host batches regrouped into batches of exactly ``size`` (the last one may be
    smaller), in the same order; batches that already have ``size`` images pass through uncopied."""
    xs, ys, held = [], [], 0
    for x, y in batches:
        if not xs and len(y) == size:
            yield x, y
            continue
        xs.append(x)
        ys.append(y)
        held += len(y)
        while held >= size:
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            yield x_all[:size], y_all[:size]
            xs, ys = ([x_all[size:]], [y_all[size:]]) if held > size else ([], [])
            held -= size
    if held:
        yield torch.cat(xs), torch.cat(ys)


def score_layers(ctx, names: list[str], step: int):
    """Scores of ``names`` on the scoring stream of the :class:`~pruning.loop.context.RunContext` ``ctx``
    (:class:`pruning.score.Scores`: with ``channel_groups`` for layers feeding grouped convs, which
    ``select_filters`` prunes evenly over the groups), and the number of images used.  Batches of the global ``batch_size``, computed in pieces of the micro-batch;
    with ``ctx.score_head`` the loss is over the starting model's full classifier
    (:class:`~pruning.loop.models.FullHead`)."""
    cfg = ctx.config
    data = ScoringBatches(ctx.score, step, cfg.score_images, ctx.runtime, cfg.batch_size)
    head = ctx.score_head.applied(ctx.model) if ctx.score_head is not None else contextlib.nullcontext()
    with head:
        scores = score_filters(ctx.model, cfg.criterion, names, data=data, num_images=cfg.score_images,
                               classes=cfg.effective_score_classes, seed=cfg.seed * 1000 + step,
                               device=ctx.runtime.device, options=cfg.criterion_options or None,
                               micro_batch=ctx.micro)
    return scores, scores.num_images
