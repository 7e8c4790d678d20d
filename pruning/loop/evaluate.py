"""Top-1 / top-5 evaluation, in the three class-subset settings.

Definitions (``N`` = images evaluated, summed over ranks):
  ``top1`` = #{argmax logits == label} / N;  ``top5`` = #{label among the 5
  largest logits} / N (top-k with k = min(5, number of logits));
  ``loss`` = mean cross-entropy.  Ties are broken by ``torch.topk``.

Class-subset settings (the paper's section 5, ImageNet-52P from an ImageNet-1k model):
  1. *restricted classifier*: ``models.restrict_classifier(model, subset)`` keeps
     the pretrained rows of the final layer; labels are in the subset's own
     space (0..k-1).  Evaluate normally.
  2. *1000-way on the subset*: the model keeps all 1000 outputs and is evaluated
     on the subset's images only, labels in the 1000-class space; a prediction
     of a class outside the subset counts as wrong.  Evaluate normally on a
     subset-only data stream (``classes=subset``).
  3. *restricted argmax* (``logit_subset=subset``): keep the 1000-way model but
     take the arg-max over the subset's logits only; labels in the 1000-class
     space are mapped to their position in ``subset``.  Equals setting 1 with an
     unmodified classifier, without touching the model.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .data import DataStream
from .rng import rng_preserved
from .train import Runtime, all_reduce_sum

log = logging.getLogger(__name__)


def evaluate(model: nn.Module, stream: DataStream, runtime: Runtime, logit_subset=None,
             pass_index: int = 0, budget: int | None = None, progress=None) -> dict:
    """``{"top1", "top5", "loss", "images"}`` of ``model`` on one pass of ``stream``.

    The model is put in eval mode and left there; counts stay on the device
    until the end (one host synchronisation per evaluation).  The global RNGs
    are restored afterwards: a DataLoader may draw a worker seed when (and only
    when) it starts workers, so without this the training randomness would
    depend on whether a persistent loader was already running (e.g. after a resume).
    """
    with rng_preserved():
        return _evaluate(model, stream, runtime, logit_subset, pass_index, budget, progress)


def _evaluate(model, stream, runtime, logit_subset, pass_index, budget, progress) -> dict:
    model.eval()
    dev = runtime.device
    correct1 = torch.zeros((), dtype=torch.float64, device=dev)
    correct5 = torch.zeros((), dtype=torch.float64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    outside = torch.zeros((), dtype=torch.long, device=dev)  # labels not in logit_subset
    n = 0
    subset = None
    remap = None
    if logit_subset is not None:
        subset = torch.as_tensor(list(logit_subset), dtype=torch.long, device=dev)
        remap = torch.full((int(subset.max()) + 1,), -1, dtype=torch.long, device=dev)
        remap[subset] = torch.arange(len(subset), device=dev)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.inference_mode():
        for x, y in stream.batches(pass_index, budget):
            x, y = runtime.to_device(x, y)
            with runtime.autocast():
                logits = model(x)
            logits = logits.float()
            if subset is not None:
                logits = logits.index_select(1, subset)
                # checked on the device and reported after the pass (no host sync per batch);
                # an outside label is scored as class 0 meanwhile, the result is never returned
                inside = (y >= 0) & (y < len(remap))
                y = torch.where(inside, remap[y.clamp(0, len(remap) - 1)], -1)
                outside += (y < 0).sum()
                y = y.clamp(min=0)
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top == y[:, None]
            correct1 += hit[:, 0].sum()
            correct5 += hit.any(dim=1).sum()
            loss_sum += loss_fn(logits, y).double()
            n += len(y)
            if progress is not None:
                progress.update(len(y))
    c1, c5, ls, tot, bad = all_reduce_sum([correct1.item(), correct5.item(), loss_sum.item(), float(n),
                                           float(outside.item())], dev)
    if bad:
        raise ValueError(f"evaluate: {int(bad)} labels of {stream.name} are outside logit_subset; "
                         "restrict the data to the same classes (DataStream(classes=...))")
    if tot == 0:
        raise ValueError(f"evaluate: {stream.name} yielded no images")
    return {"top1": c1 / tot, "top5": c5 / tot, "loss": ls / tot, "images": int(tot)}
