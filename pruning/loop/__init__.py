"""Algorithm 1 (layer-by-layer prune and fine-tune) as a measured, resumable engine.

Public API::

    from pruning.loop import prune_finetune, run_loop, LoopConfig, RunOptions
    summary = prune_finetune(model, "l1", 0.5, "vgg16", train_ds, val_ds, test_ds, p=1, q=12,
                             out_dir="runs/vgg16-l1-50", resume=True)

The engine takes datasets or DataLoaders and a model; opening a build, choosing the head and
building the model is the application's job (:mod:`benchmark.run`).

See :mod:`pruning.loop.engine` for what is measured, :mod:`pruning.loop.config`
for every option, and docs/algorithm1.md.  Modules: ``engine`` (open, start or resume, run),
``context`` (the run's fixed inputs), ``state`` (its typed, checkpointed state), ``stages`` (baseline, layer steps, final fine-tune),
``preflight`` (the checks before anything is written),
``summary`` (test and summary), ``scoring`` (scoring batches), ``rundir`` (the run directory:
files, checkpoints, resume checks), ``data`` (counted data streams), ``train``, ``evaluate``,
``models``, ``config``, ``rng``, ``distributed``.
"""

from .config import LoopConfig, RunOptions, run_hash
from ..files import WriteError
from .engine import Interrupted, Stopped, prune_finetune, run_loop
from .evaluate import evaluate
from .models import FullHead, list_models, make_model, restrict_classifier
from .distributed import init_distributed

__all__ = ["FullHead", "Interrupted", "LoopConfig", "RunOptions", "Stopped", "WriteError", "evaluate", "list_models", "make_model",
           "prune_finetune", "init_distributed", "restrict_classifier", "run_hash", "run_loop"]
