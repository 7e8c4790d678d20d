"""The one run path: data opened -> head chosen -> model built -> engine run.

``imagenet52p prune`` (:func:`run_spec`) and every grid cell (:func:`benchmark.execute.execute_cell`) go
through the same three steps:

1. :func:`benchmark.data.open_data` opens the build (or folders tree) through the one DataLoader recipe
   and resolves the class-subset head (:func:`benchmark.data.choose_head`);
2. :func:`apply_head` adapts the starting model's classifier to that head (``restrict`` keeps the run's
   rows, :func:`pruning.loop.restrict_classifier`);
3. :func:`run_engine` calls the Algorithm 1 engine, :func:`pruning.loop.run_loop`, with the data's
   loaders, the head's evaluation subset and the device-side normalisation.

They differ only in where the starting model comes from (a model name and a weights file for
``prune``; for a cell, its ``init``, kind and ``[model]``: :mod:`benchmark.execute`) and in what they
record as the run's identity (``meta``: the spec for ``prune``, the cell's id and hash for a cell).

:class:`RunSpec` (frozen) names the model, the data and the class-subset setting of a single run;
together with a :class:`~pruning.loop.config.LoopConfig` and :class:`~pruning.loop.config.RunOptions`
it fully describes one.  A run directory with ``summary.json`` is complete: ``run_spec(...,
resume=True)`` returns it untouched; one with ``checkpoints/last.pt`` continues; otherwise the run
starts.  Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the default process group is
initialised here (NCCL on CUDA, Gloo on CPU: :func:`pruning.loop.init_distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pruning.loop.config import LoopConfig, RunOptions
from pruning.loop.distributed import init_distributed

from .data import RunData, Transforms, open_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Model and data of a run.

    ``model``: a name for :func:`pruning.loop.make_model` (``timm/<name>`` for timm); ``weights``: a weight
    name (``IMAGENET1K_V1``, ``DEFAULT``, a timm tag) or a state_dict file for it (None = random init seeded
    by ``init_seed``; :mod:`pruning.weights`); ``num_classes``: outputs of the model as built (None = the
    data's label space: 1000 for ``imagenet1k``/``restrict``/``subset-logits``, else the build's number of
    classes); ``data``: build directory or folders tree; ``head``, ``label_space``, ``classes``: see
    :mod:`benchmark.data`; ``image_size``/``resize``: transform sizes.
    """

    model: str
    data: str
    weights: str | None = None
    num_classes: int | None = None
    head: str = "full"
    label_space: str = "subset"
    classes: str | None = None
    image_size: int = 224
    resize: int | None = None
    init_seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def apply_head(model, data: RunData, full_head: bool = False):
    """Step 2: cut ``model``'s classifier to the rows the head keeps (``restrict``), in place.  Returns
    ``(model, FullHead or None)``: with ``full_head``, the classifier as it was before the cut
    (:class:`pruning.loop.FullHead`, for a scoring loss over every class the starting model knew)."""
    from pruning.loop import FullHead, restrict_classifier

    rows = None if data.head is None else data.head.restrict_rows
    if rows is None:
        return model, None
    kept = FullHead.of(model, rows) if full_head else None
    restrict_classifier(model, rows)
    return model, kept


def run_engine(model, config: LoopConfig, data: RunData, out_dir, options: RunOptions, *, resume: bool, meta: dict,
               score="data", score_head=None, train_pass_images: int | None = None) -> dict:
    """Step 3: the engine on ``data``'s loaders; ``score``: the scoring data (default: ``data.score``, the
    run's own train split with the eval transform)."""
    from pruning.loop import run_loop

    return run_loop(model, config, data.train, data.val, data.test, data.score if score == "data" else score,
                    out_dir=Path(out_dir), resume=resume, options=options, meta=meta,
                    logit_subset=None if data.head is None else data.head.logit_subset,
                    batch_transform=data.batch_transform, score_head=score_head,
                    train_pass_images=train_pass_images)


def _check_num_classes(num_classes: int, data: RunData, spec: RunSpec) -> None:
    """The model's outputs must cover the data's labels (checked before anything is written)."""
    head = data.head
    needed = (max(head.restrict_rows) + 1 if head is not None and head.restrict_rows is not None
              else data.num_labels)
    if num_classes < needed:
        raise ValueError(f"--num-classes {num_classes} (num_classes): the data of {spec.data} has labels up to "
                         f"{needed - 1} in the {data.describe['label_space']} label space, so the model needs at "
                         f"least {needed} outputs; omit --num-classes, or give the number of outputs of the "
                         "model the weights were saved from")


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def run_spec(spec: RunSpec, config: LoopConfig, out_dir, options: RunOptions | None = None,
             resume: bool = False) -> dict:
    """``imagenet52p prune``: the three steps for ``spec`` into ``out_dir``; returns the summary."""
    from imagenet52p.format import file_sha256
    from pruning.loop import make_model
    from pruning.weights import resolve_weights

    out = Path(out_dir)
    if resume and (out / "summary.json").is_file():
        log.info("%s is complete (summary.json); nothing to do", out)
        return json.loads((out / "summary.json").read_text())
    options = options or RunOptions()
    init_distributed(options.device)
    micro = config.micro_batch(world_size())  # batch_size is the global batch
    data = open_data(spec.data, head=spec.head, label_space=spec.label_space, classes=spec.classes,
                     sizes=Transforms(spec.image_size, spec.resize), batch_size=micro,
                     num_workers=options.num_workers, seed=config.seed, score_batch_size=config.batch_size)
    keep = None if data.head is None else data.head.keep
    if keep is not None and config.classes is None:
        config = dataclasses.replace(config, classes=keep)
    restricting = data.head is not None and data.head.restrict_rows is not None
    num_classes = spec.num_classes or (1000 if restricting else data.num_labels)
    _check_num_classes(num_classes, data, spec)
    source = resolve_weights(spec.model, spec.weights)  # named weights: found in (or fetched into) their cache
    model, _ = apply_head(make_model(spec.model, num_classes, weights=source, seed=spec.init_seed), data)
    # the data path is not part of the run's identity (a moved build resumes); its manifest is
    spec_meta = {k: v for k, v in spec.to_dict().items() if k != "data"}
    describe = {k: v for k, v in data.describe.items() if k != "path"}
    manifest = Path(spec.data) / "manifest.json"
    describe["manifest_sha256"] = file_sha256(str(manifest)) if manifest.is_file() else None
    log.info("data: %s (%s)", spec.data, data.describe["format"])
    meta = {"spec": spec_meta, "data": describe, "num_classes": num_classes, "weights_sha256": source.sha256}
    if source.name:  # a weight name's canonical form (VGG16_Weights.IMAGENET1K_V1, timm/resnet50.a1_in1k)
        meta["weights_name"] = source.name
    return run_engine(model, config, data, out, options, resume=resume, meta=meta)
