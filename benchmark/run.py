"""One run from a directory of data: what ``imagenet52p prune`` and the benchmark runner call.

:class:`RunSpec` (frozen) names the model, the data and the class-subset setting;
together with a :class:`~pruning.loop.config.LoopConfig` and
:class:`~pruning.loop.config.RunOptions` it fully describes a run.
:func:`run_spec` builds the model and the data, and calls
:func:`~pruning.loop.engine.run_loop` with ``meta`` = the spec (so the run hash
covers the model, weights file and data as well as the loop options).

A run directory with ``summary.json`` is complete: ``run_spec(..., resume=True)``
returns it untouched; one with ``checkpoints/last.pt`` continues; otherwise
the run starts.  Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the
default process group is initialised here (NCCL on CUDA, Gloo on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pruning.loop.config import LoopConfig, RunOptions
from pruning.loop.distributed import init_distributed
from pruning.loop.engine import run_loop
from .data import open_data
from pruning.loop.models import make_model, restrict_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Model and data of a run.

    ``model``: a name for :func:`~pruning.loop.models.make_model`; ``weights``:
    a state_dict file for it (None = random init seeded by ``init_seed``);
    ``num_classes``: outputs of the model as built (None = the data's label
    space: 1000 for ``imagenet1k``/``restrict``/``subset-logits``, else the
    build's number of classes); ``data``: build directory or folders tree;
    ``head``, ``label_space``, ``classes``: see :mod:`benchmark.data`;
    ``image_size``/``resize``: transform sizes.
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


def run_spec(spec: RunSpec, config: LoopConfig, out_dir, options: RunOptions | None = None,
             resume: bool = False) -> dict:
    """Build the model and data of ``spec`` and run the loop into ``out_dir``; returns the summary."""
    out = Path(out_dir)
    if resume and (out / "summary.json").is_file():
        log.info("%s is complete (summary.json); nothing to do", out)
        return json.loads((out / "summary.json").read_text())
    from imagenet52p.build.writer import file_sha256  # this path opens a build (issue 12 moves it out)

    options = options or RunOptions()
    init_distributed(options.device)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    micro = config.micro_batch(world)  # batch_size is the global batch
    data = open_data(spec.data, head=spec.head, label_space=spec.label_space, classes=spec.classes,
                     image_size=spec.image_size, resize=spec.resize, batch_size=micro,
                     num_workers=options.num_workers, seed=config.seed, score_batch_size=config.batch_size)
    if data.classes is not None and config.classes is None:
        config = dataclasses.replace(config, classes=data.classes)
    num_classes = spec.num_classes or (1000 if data.restrict_rows is not None else data.num_labels)
    model = make_model(spec.model, num_classes, weights=spec.weights, seed=spec.init_seed)
    if data.restrict_rows is not None:
        restrict_classifier(model, data.restrict_rows)
    # the data path is not part of the run's identity (a moved build resumes); its manifest is
    spec_meta = {k: v for k, v in spec.to_dict().items() if k != "data"}
    describe = {k: v for k, v in data.describe.items() if k != "path"}
    manifest = Path(spec.data) / "manifest.json"
    describe["manifest_sha256"] = file_sha256(str(manifest)) if manifest.is_file() else None
    log.info("data: %s (%s)", spec.data, data.describe["format"])
    meta = {"spec": spec_meta, "data": describe, "num_classes": num_classes,
            "weights_sha256": None if spec.weights is None else file_sha256(spec.weights)}
    return run_loop(model, config, data.train, data.val, data.test, data.score, out_dir=out, resume=resume,
                    options=options, meta=meta, logit_subset=data.logit_subset, batch_transform=data.batch_transform)
