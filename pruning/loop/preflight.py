"""The checks a run passes before it writes anything: what would otherwise fail only after ``config.json``
(or a checkpoint) is written, in the baseline or in training.

:func:`check_run` refuses, with a ``ValueError`` naming the option: target layers the model does not have (or
a protocol written for another architecture), options the criterion does not take or of the wrong kind, a
criterion that needs a class subset without one, labels outside the model's outputs (first batch of each
stream, and every label where the dataset tells them cheaply), and an input the model cannot take (one
forward pass of one image, in eval mode without gradients; every RNG and every module's mode put back).
"""

from __future__ import annotations

import torch

from .context import RunContext
from .data import dataset_labels
from .rng import rng_preserved


def check_run(ctx: RunContext) -> None:
    """Every check of the module docstring, on ``ctx`` as :func:`~pruning.loop.engine._open` made it."""
    from . import stages

    cfg = ctx.config
    stages.target_layers(ctx.model, cfg)  # unknown conv names / another architecture's protocol
    if cfg.criterion is not None:
        from ..registry import get_criterion

        crit = get_criterion(cfg.criterion)
        crit.check_options(cfg.criterion_options)
        if crit.requires_classes and not cfg.effective_score_classes:
            raise ValueError(f"criterion {cfg.criterion!r} scores filters for a class subset and needs classes "
                             "(--classes) or score_classes; give the labels of the subset")
    with rng_preserved(), torch.no_grad():
        first = _first_batch(ctx.val)
        if first is None:
            return  # a one-shot iterable: the baseline reads it
        outputs = _outputs(ctx, first[0])
        _check_labels(ctx.val, outputs, "the model's", first)
        for stream in (ctx.train, ctx.test):
            if stream is not None:
                _check_labels(stream, outputs, "the model's")
        if not _scores_with_labels(cfg):
            return  # no layer step, or a criterion of weights or activations alone: the scoring labels are unused
        if ctx.score_head is not None:
            _check_labels(ctx.score, ctx.score_head.num_classes, "the scoring head's")
        elif ctx.score.data is not ctx.train.data or ctx.score.classes != ctx.train.classes:
            _check_labels(ctx.score, outputs, "the model's")


def _scores_with_labels(cfg) -> bool:
    """Whether scoring reads labels: a layer step with a loss-based criterion (gradients, masks)."""
    if cfg.criterion is None or cfg.ratio == 0:
        return False
    from ..registry import get_criterion
    return get_criterion(cfg.criterion).needs not in ("weights", "activations")


def _first_batch(stream):
    """The stream's first ``(images, labels)`` batch, read without touching the stream's own loader: a
    DataLoader is read through a worker-free twin over the same dataset, so no worker pool is started (or
    kept alive) here and the loader draws its workers' seed from the RNG where the run does, as without the
    check.  None for a one-shot iterator (reading it would consume it)."""
    import collections.abc

    data = stream.data
    if isinstance(data, collections.abc.Iterator):
        return None
    if isinstance(data, torch.utils.data.DataLoader):
        # batched as the loader batches: its batch size, its batch sampler, or none (batch_size=None: the
        # dataset yields batches itself, as a webdataset pipeline does)
        batching = ({"batch_size": data.batch_size} if data.batch_size is not None else
                    {"batch_sampler": data.batch_sampler} if data.batch_sampler is not None else {"batch_size": None})
        twin = torch.utils.data.DataLoader(data.dataset, num_workers=0, collate_fn=data.collate_fn, **batching)
        for batch in twin:
            return batch[0], batch[1]
        return None
    for x, y in stream.batches(0):
        return x, y
    return None


def _outputs(ctx: RunContext, x: torch.Tensor) -> int:
    """The model's number of outputs, from one forward pass of one image of the first val batch."""
    model = ctx.model
    param = next(model.parameters(), None)
    modes = {m: m.training for m in model.modules()}
    img = ctx.runtime.images_to_device(x[:1])
    if param is not None:
        img = img.to(param.device, param.dtype)
    model.eval()
    try:
        out = model(img)
    except (RuntimeError, ValueError, IndexError) as exc:
        size = "x".join(str(s) for s in x.shape[1:])
        raise ValueError(f"the model {type(model).__name__} cannot take images of size {size} (channels x height "
                         f"x width, from the val data): {str(exc).splitlines()[0][:200]}; use a larger image size "
                         f"(--image-size) or a model made for this input") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return 0  # not a classifier's [N, K] logits: nothing to check the labels against
    return int(out.shape[1])


def _check_labels(stream, outputs: int, whose: str, first=None) -> None:
    if outputs < 1:
        return
    labels = dataset_labels(stream.data, read_items=False) if stream.map_style else None
    if labels is None:
        first = first if first is not None else _first_batch(stream)
        labels = [] if first is None else torch.as_tensor(first[1]).flatten().tolist()
    if stream.classes is not None:  # the run's classes: other labels (e.g. -1, outside them) are dropped
        keep = set(stream.classes)
        labels = [y for y in labels if y in keep]
    bad = [int(y) for y in labels if not 0 <= int(y) < outputs]
    if bad:
        raise ValueError(f"the {stream.name} data has label {max(bad)}, but {whose} classifier has {outputs} "
                         f"outputs (labels 0..{outputs - 1}): the number of classes (--num-classes) is smaller "
                         f"than the data's; give at least {max(bad) + 1} classes or restrict the data (--classes)")
