"""Algorithm 1 of the paper (layer-by-layer prune and fine-tune), measured.

For each target layer, from last to first (``LoopConfig.order``):

1. ``acc_before``: val accuracy of the network as it is (equal to the previous
   step's ``acc_recovery``; the unpruned baseline for the first step);
2. score the layer's filters with the criterion on the scoring data
   (``score_images`` images, restricted to ``score_classes``);
3. keep the top ``(1 - ratio)`` of them and **physically remove** the rest
   (``pruning.apply_plan``), then ``acc_damage``: val accuracy of the pruned
   network before any fine-tuning (the paper's damage);
4. fine-tune for ``p`` epochs, then ``acc_recovery``: val accuracy (recovery);
5. record filters before/kept, params and MACs, images used for scoring and
   for fine-tuning, wall time; checkpoint.

Then the whole network is fine-tuned for ``q`` epochs, with val top-1/top-5
after every epoch (the speed-of-recovery curve).  The final model is the
epoch with the best val top-1 (``select="best"``; ties: lower val loss, then
the earlier epoch) or the last one; ``test`` is evaluated exactly once, on that model.
One-shot mode scores every target layer on the unpruned network, removes them
all at once (one step, ``layer="*"``), and goes straight to the final fine-tune.

Derived plasticity measures in the summary (val top-1 throughout):
``damage`` = ``acc_before - acc_damage`` and ``recovered`` = ``acc_recovery -
acc_damage`` per step; ``epochs_to_peak`` (the speed of recovery) = the first final epoch
whose top-1 is within ``PEAK_TOL`` (0.5 points) of the best final top-1, measured only when the
final LR is constant (``schedule="constant"``; None otherwise, with ``epochs_to_peak_note``
saying why: an annealed LR puts every peak near the last epoch); ``epochs_to_baseline`` = the first
final epoch at or above the unpruned baseline's top-1 (None if never).

Run directory (written by rank 0; :mod:`pruning.loop.rundir`): ``config.json``, ``events.jsonl``,
``checkpoints/last.pt``, ``model/plan.json`` + ``model/state_dict.pt``,
``timing.json`` and, last, ``summary.json`` (its presence means complete).
Everything in ``summary.json`` and ``events.jsonl`` except the ``timing``
fields is a deterministic function of the config, the data and the seed.

This module opens a run (:class:`~pruning.loop.context.RunContext`), starts or resumes its
:class:`~pruning.loop.state.LoopState`, and runs the stages (:mod:`pruning.loop.stages`,
:mod:`pruning.loop.summary`).  The algorithm's page: docs/algorithm1.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from . import stages
from .config import LoopConfig, RunOptions, run_hash
from .context import RunContext
from .data import DataStream, dist_info
from .preflight import check_run
from .rng import set_rng_state
from .rundir import RunDir, state_from_checkpoint
from .stages import Interrupted, Stopped  # noqa: F401  (re-exported)
from .state import LoopState
from .summary import PEAK_TOL, finish  # noqa: F401  (PEAK_TOL re-exported)
from .tensorboard import TensorBoardLog, check_available
from .train import Runtime

log = logging.getLogger(__name__)


def _open(model: nn.Module, config: LoopConfig, train_data, val_data, test_data=None, score_data=None,
          out_dir=None, options: RunOptions | None = None, meta: dict | None = None, logit_subset=None,
          train_pass_images: int | None = None, batch_transform=None, score_head=None) -> RunContext:
    """Check the config against the registry, choose the device, and open the data streams."""
    opts = options or RunOptions()
    if config.ratio > 0:
        import pruning
        pruning.get_criterion(config.criterion)  # an unknown name fails now, listing the valid ones
        if isinstance(config.layers, str) and config.layers not in pruning.PROTOCOLS:
            raise ValueError(f"layers={config.layers!r} is not a protocol ({', '.join(pruning.PROTOCOLS)}); "
                             "give a protocol or a list of conv names")
    meta = dict(meta or {})
    rank, world = dist_info()
    runtime = Runtime.create(opts.device, opts.amp, opts.channels_last, opts.deterministic)
    if batch_transform is not None:
        runtime.normalize = batch_transform.to(runtime.device) if isinstance(
            batch_transform, nn.Module) else batch_transform
    micro = config.micro_batch(world)  # batch_size is global: split over ranks and accumulation
    _check_loader_batch(train_data, micro, config, world)
    kw = dict(num_workers=opts.num_workers, pin_memory=runtime.is_cuda)
    train = DataStream(train_data, micro, config.classes, config.data_fraction, config.seed,
                       shuffle=True, pass_images=train_pass_images, name="train", **kw)
    train_final = train
    if config.effective_final_data_fraction != config.data_fraction:
        train_final = DataStream(train_data, micro, config.classes, config.effective_final_data_fraction,
                                 config.seed, shuffle=True, pass_images=train_pass_images,
                                 name="train (final)", **kw)
    val = DataStream(val_data, micro, config.classes, 1.0, config.seed, shuffle=False, name="val", **kw)
    test = (None if test_data is None else
            DataStream(test_data, micro, config.classes, 1.0, config.seed, shuffle=False, name="test", **kw))
    # scoring reads batches of the global batch_size (rank 0 only; pieces of `micro` on the device)
    score = DataStream(train_data if score_data is None else score_data, config.batch_size,
                       config.effective_score_classes, 1.0, config.seed + 1, shuffle=True,
                       name="score", split_ranks=False, **kw)
    return RunContext(config=config, options=opts, meta=meta, run_hash=run_hash(config, meta), world=world,
                      is_main=rank == 0, runtime=runtime, out=RunDir(out_dir, rank == 0, world), model=model,
                      train=train, train_final=train_final, val=val, test=test, score=score, micro=micro,
                      logit_subset=None if logit_subset is None else [int(c) for c in logit_subset],
                      score_head=score_head, tensorboard=_tensorboard(opts, out_dir, rank))


def _tensorboard(opts: RunOptions, out_dir, rank: int) -> TensorBoardLog | None:
    """Rank 0's TensorBoard log under ``out_dir/tensorboard`` when asked for (checked now: one-line errors)."""
    if not opts.tensorboard:
        return None
    if out_dir is None:
        raise ValueError("RunOptions.tensorboard writes into the run directory: give out_dir")
    check_available()
    return TensorBoardLog(Path(out_dir) / "tensorboard") if rank == 0 else None


def _resume(ctx: RunContext, ck: dict) -> LoopState:
    """The state of checkpoint ``ck``, with the model rebuilt (plans replayed, weights loaded), the events
    file cut back to the checkpoint, and every RNG as it was."""
    state = state_from_checkpoint(ck)
    rec = state.record
    if rec.train_pass_images:
        ctx.train.set_pass_images(rec.train_pass_images)
    if rec.final_pass_images:
        ctx.train_final.set_pass_images(rec.final_pass_images)
    example = stages.example_input(rec.input_size)
    for plan in state.plans:
        stages.apply(ctx.model, plan, example)
    try:
        ctx.model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        last = ctx.out.path / "checkpoints" / "last.pt"
        raise ValueError(f"checkpoint {last} holds weights that do not fit {type(ctx.model).__name__} "
                         f"({str(exc).splitlines()[0][:160]}): the model changed since the run started; resume with "
                         f"the run's own model, or delete {last} to restart the run") from None
    ctx.runtime.prepare(ctx.model)
    ctx.out.truncate_events(state.events_written)
    set_rng_state(ck["rng"])
    log.info("resumed %s at %s", ctx.out.path, state.position)
    return state


def _run(ctx: RunContext, resume: bool) -> dict:
    """Start or resume the run, run its remaining stages, write the results; returns the summary."""
    done = ctx.out.completed_summary(resume)
    if done is not None:
        return done
    check_run(ctx)  # everything that would fail later, before anything is written
    torch.manual_seed(ctx.config.seed)
    try:
        ck = ctx.out.prepare(ctx.run_hash, ctx.config, ctx.meta, resume)  # takes the folder's lock
        if ck is not None:
            state = _resume(ctx, ck)
        else:
            state = LoopState()
            ctx.runtime.prepare(ctx.model)
            stages.baseline(ctx, state)
        t0 = time.perf_counter()
        if state.position.stage == "steps":
            stages.layer_steps(ctx, state)
        if state.position.stage == "final":
            stages.final_finetune(ctx, state)
        summary = finish(ctx, state)
        ctx.out.write_results(state.timing.to_dict(), summary)
    except (IndexError, KeyboardInterrupt) as exc:
        raise _explained(ctx, exc) from None
    finally:
        if ctx.tensorboard is not None:
            ctx.tensorboard.close()
        ctx.out.release()
    log.info("run %s done in %.1fs", ctx.run_hash, time.perf_counter() - t0)
    return summary


def _explained(ctx: RunContext, exc: BaseException) -> BaseException:
    """What to raise for ``exc`` of a running run: Ctrl-C as :class:`Interrupted` (saying that ``--resume``
    continues), a label beyond the classifier that the first batches did not show as a ``ValueError``."""
    if isinstance(exc, Interrupted) or (isinstance(exc, IndexError) and not str(exc).startswith("Target ")):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        stop = Interrupted(ctx.out.path)
        log.warning("%s", stop)
        return stop
    again = f", then delete {ctx.out.path} and start again" if ctx.out.path else ""
    return ValueError(f"a label of the data is outside the model's outputs ({exc}); the number of classes "
                      f"(--num-classes) is smaller than the data's: give more classes or restrict the data "
                      f"(--classes){again}")


def _check_loader_batch(data, micro: int, config: LoopConfig, world: int) -> None:
    """A DataLoader given as training data must yield the micro-batch that the global ``batch_size`` implies
    (its own batch size would otherwise set the images per optimizer step, and with them the results)."""
    bs = getattr(data, "batch_size", None)
    if isinstance(bs, int) and not isinstance(data, torch.utils.data.Dataset) and bs != micro:
        raise ValueError(f"the training DataLoader yields batches of {bs} images per process, but batch_size="
                         f"{config.batch_size} is the global batch: {config.batch_size} / (accum_steps="
                         f"{config.accum_steps} x world size={world}) = {micro} images per process; build the "
                         f"DataLoader with batch_size={micro}")


def run_loop(model: nn.Module, config: LoopConfig, train_data, val_data, test_data=None, score_data=None,
             out_dir=None, resume: bool = False, options: RunOptions | None = None, meta: dict | None = None,
             logit_subset=None, train_pass_images: int | None = None, batch_transform=None,
             score_head=None) -> dict:
    """Run Algorithm 1 with a resolved :class:`LoopConfig`; returns the summary dict.

    ``model`` must be the *unpruned* network (also when resuming: the plans in
    the checkpoint are replayed on it).  Data arguments: map-style datasets of
    ``(image, label)`` or iterables of ``(images, labels)`` batches (see
    :mod:`pruning.loop.data`).  With ``out_dir`` and ``resume=True`` a complete
    run returns its stored summary, an interrupted one continues from
    ``checkpoints/last.pt``, a missing one starts.  ``logit_subset``: evaluate
    with the arg-max restricted to these logits (:mod:`pruning.loop.evaluate`).
    ``train_pass_images``: images per pass of an iterable that cannot tell.
    ``batch_transform``: applied to every image batch on the device (e.g.
    ``imagenet52p.transforms.Normalize()`` for uint8 batches; default for uint8:
    divide by 255).  ``score_head``: a :class:`~pruning.loop.models.FullHead`
    whose classifier the scoring loss uses instead of the model's own (scoring
    a class-subset model over all the classes its starting model knew);
    ``score_data``'s labels are then in that classifier's label space.

    Batches: ``config.batch_size`` is the global batch.  A ``DataLoader`` given
    as ``train_data`` must have ``batch_size = config.micro_batch(world size)``
    (refused otherwise); map-style datasets are batched by the loop.
    """
    ctx = _open(model, config, train_data, val_data, test_data, score_data, out_dir, options, meta,
                logit_subset, train_pass_images, batch_transform, score_head)
    return _run(ctx, resume)


def prune_finetune(model: nn.Module, criterion: str, ratio: float, layers="all", train_data=None, val_data=None,
                   test_data=None, score_data=None, *, p: float = 1.0, q: float = 12.0, out_dir=None,
                   resume: bool = False, options: RunOptions | None = None, meta: dict | None = None,
                   logit_subset=None, train_pass_images: int | None = None, batch_transform=None,
                   score_head=None, **config_fields) -> dict:
    """Prune ``model`` layer by layer with ``criterion`` and fine-tune it (Algorithm 1); return the summary.

    ``layers``: a protocol name for ``pruning.prunable_layers`` or a list of conv
    names.  ``p``/``q``: fine-tuning epochs after each layer / at the end
    (fractions allowed).  Any other :class:`LoopConfig` field (``order``,
    ``one_shot``, ``data_fraction``, ``final_data_fraction``, ``classes``, ``score_images``, ``lr``,
    ``batch_size``, ``seed``...) is accepted as a keyword.  ``options``:
    :class:`RunOptions` (device, amp, progress...).  ``meta``: JSON-able
    description of the experiment (model name, data...) stored in
    ``config.json`` and part of the run hash.  The model is modified in place
    and left pruned, holding the selected final weights.
    """
    if train_data is None or val_data is None:
        raise ValueError("prune_finetune needs train_data and val_data")
    cfg = LoopConfig(criterion=criterion, ratio=ratio, layers=layers if isinstance(layers, str) else tuple(layers),
                     p=p, q=q, **config_fields)
    return run_loop(model, cfg, train_data, val_data, test_data, score_data, out_dir, resume, options, meta,
                    logit_subset, train_pass_images, batch_transform, score_head)
