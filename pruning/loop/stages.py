"""The stages of Algorithm 1 as functions of the run's state: the baseline, the layer steps (score and
select, prune, damage eval, fine-tune, recovery eval) and the final fine-tune.

Every stage takes the :class:`~pruning.loop.context.RunContext` (what the run works with) and the
:class:`~pruning.loop.state.LoopState` (where it stands), advances the state, writes its event and ends in a
checkpoint (:mod:`pruning.loop.rundir`).  The last stage, test and summary, is :mod:`pruning.loop.summary`;
the scoring batches are :mod:`pruning.loop.scoring`.  Definitions: docs/algorithm1.md and
:mod:`pruning.loop.engine`.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from ..cost import count_cost
from ..layers import prunable_layers
from ..select import select_filters
from ..surgery import apply_plan
from .context import RunContext
from .evaluate import evaluate
from .rundir import state_dict_cpu
from .scoring import score_layers
from .state import LoopState, Position
from .train import lr_at, make_optimizer, train_chunk

log = logging.getLogger(__name__)


class Stopped(RuntimeError):
    """Raised when ``RunOptions.stop_after`` checkpoints have been written (test hook)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``str()`` says that rerunning the same command with ``--resume`` (``resume=True``)
    continues from the last checkpoint of ``out_dir`` (what an application prints instead of a traceback)."""

    def __init__(self, out_dir=None):
        self.out_dir = out_dir
        where = f" of {out_dir}" if out_dir is not None else " (a run without out_dir keeps none: start again)"
        super().__init__(f"interrupted: rerun the same command with --resume (resume=True) to continue from the "
                         f"last checkpoint{where}")


def progress_bar(total, desc: str, enabled: bool, unit: str = "it"):
    """A tqdm bar, left off the screen when done; a disabled one when not ``enabled`` or when stderr is not a
    terminal (a log file gets no bars, nested or not: each phase logs one line when it ends instead)."""
    import sys

    from tqdm.auto import tqdm
    tty = bool(getattr(sys.stderr, "isatty", None)) and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not (enabled and tty), unit=unit, leave=False, dynamic_ncols=True)


def final_label(ctx: RunContext, j: int, n: int) -> str:
    """The label of final epoch ``j + 1`` of ``n``: a run that prunes nothing (``ratio`` 0: pretraining, a
    baseline) only trains, so "final" would name a phase it does not have."""
    return (f"final fine-tune epoch {j + 1}/{n}" if ctx.config.ratio > 0 else f"training epoch {j + 1}/{n}")


# ------------------------------------------------------------------ events and checkpoints
def emit(ctx: RunContext, state: LoopState, kind: str, timing: dict | None = None, **fields) -> None:
    """Append event ``kind`` with ``fields`` (and its ``timing``) to ``events.jsonl`` (and first to the
    TensorBoard log, at step = its line index, when there is one); count it."""
    ev = {"event": kind, **fields}
    if timing is not None:
        ev["timing"] = timing
    if ctx.tensorboard is not None:
        ctx.tensorboard.write(state.events_written, ev)
    ctx.out.append_event(ev)
    state.events_written += 1
    log.info("%s %s", kind, {k: v for k, v in fields.items() if not isinstance(v, (list, dict))})


def checkpoint(ctx: RunContext, state: LoopState, tag: str | None = None) -> None:
    """Save the state; :class:`Stopped` once ``RunOptions.stop_after`` checkpoints are written."""
    ctx.out.save_checkpoint(ctx.run_hash, state, ctx.model, tag, ctx.options.keep_step_checkpoints)
    state.checkpoints_written += 1
    stop = ctx.options.stop_after
    if stop is not None and state.checkpoints_written >= stop:
        raise Stopped(f"stopped after {state.checkpoints_written} checkpoints (RunOptions.stop_after)")


# ------------------------------------------------------------------ adapters to the pruning core
def example_input(input_size) -> torch.Tensor:
    return torch.zeros(1, *[int(s) for s in input_size])


def target_layers(model: nn.Module, cfg) -> list[str]:
    """Conv names in the order they are pruned (see ``LoopConfig.order``)."""
    if isinstance(cfg.layers, str):
        names = list(prunable_layers(model, cfg.layers))  # last to first
        if cfg.order == "first_to_last":
            names = names[::-1]
        return names
    modules = dict(model.named_modules())
    bad = [n for n in cfg.layers if not isinstance(modules.get(n), nn.Conv2d)]
    if bad:
        raise ValueError(f"layers {bad} are not Conv2d modules of {type(model).__name__}; valid: "
                         f"{[n for n, m in modules.items() if isinstance(m, nn.Conv2d)][:20]}")
    if cfg.order == "given":
        return list(cfg.layers)
    pos = {n: i for i, n in enumerate(modules)}
    names = sorted(cfg.layers, key=pos.__getitem__)
    return names[::-1] if cfg.order == "last_to_first" else names


def apply(model: nn.Module, plan: dict, example: torch.Tensor) -> nn.Module:
    """``pruning.apply_plan`` of a plan read back from JSON, with the example input on the model's device."""
    dev = next(model.parameters()).device
    plan = {k: [int(i) for i in v] for k, v in plan.items()}
    return apply_plan(model, plan, example.to(dev))


def cost(model: nn.Module, input_size) -> dict:
    """``{"params", "macs"}`` of ``model`` for one image of ``input_size``."""
    c = count_cost(model, input_size)
    return {"params": c["params"], "macs": c["macs"]}


def validate(ctx: RunContext) -> dict:
    """Val accuracy of the model as it is now."""
    return evaluate(ctx.model, ctx.val, ctx.runtime, ctx.logit_subset)


# ------------------------------------------------------------------ fine-tuning phases
def _chunks(stream, epochs: float) -> list[int]:
    """Image budgets of the chunks of a phase of ``epochs`` epochs of ``stream`` (each at most one epoch)."""
    n = stream.pass_images
    total = round(epochs * n)
    out = []
    while total > 0:
        out.append(min(n, total))
        total -= out[-1]
    return out


def _train(ctx: RunContext, state: LoopState, stream, budget: int, lr_fn, images_before: int, desc: str):
    """One chunk of ``budget`` images of the next training pass."""
    bar = progress_bar(budget, desc, ctx.options.progress and ctx.is_main, unit="img")
    stats = train_chunk(ctx.model, stream, state.position.pass_index, budget, state.optimizer, ctx.runtime,
                        ctx.config.accum_steps, lr_fn, images_before, bar)
    bar.close()
    state.position.pass_index += 1
    log.info("%s: %d images in %.2fs (%.1f images/s; data %.2fs, compute %.2fs), loss %.4f", desc, stats.images,
             stats.wall_time, stats.images_per_s, stats.data_time, stats.compute_time, stats.loss)
    return stats


def _new_optimizer(ctx: RunContext, state: LoopState, lr: float) -> None:
    """The phase's optimizer, continuing a checkpoint's optimizer state when there is one."""
    cfg = ctx.config
    state.optimizer = make_optimizer(ctx.model, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
    if state.optimizer_state is not None:
        state.optimizer.load_state_dict(state.optimizer_state)
        state.optimizer_state = None


# ------------------------------------------------------------------ stages
def baseline(ctx: RunContext, state: LoopState) -> None:
    """The unpruned network: input size, target layers, val accuracy and cost; images per training pass."""
    for x, _ in ctx.val.batches(0):  # the first batch tells the input size
        break
    else:
        raise ValueError("val data yielded no images on this rank")
    rec = state.record
    rec.input_size = list(x.shape[1:])
    names = target_layers(ctx.model, ctx.config)
    rec.layers = names
    t = time.perf_counter()
    acc = validate(ctx)
    size = cost(ctx.model, rec.input_size)
    rec.baseline = {"val": acc, **size}
    rec.train_pass_images = ctx.train.pass_images  # stored: never counted again on resume
    rec.final_pass_images = ctx.train_final.pass_images
    emit(ctx, state, "baseline", timing={"wall_s": round(time.perf_counter() - t, 4)}, val=acc, layers=names,
         train_images_per_epoch=ctx.train.pass_images, **size)
    state.position = Position(stage="steps" if ctx.config.ratio > 0 else "final")
    checkpoint(ctx, state, "baseline")


def layer_steps(ctx: RunContext, state: LoopState) -> None:
    """Every layer step from the current one (one step of all layers in one-shot mode, with no ``p``)."""
    one_shot = ctx.config.one_shot
    groups = [state.record.layers] if one_shot else [[n] for n in state.record.layers]
    bar = progress_bar(len(groups), "layer steps", ctx.options.progress and ctx.is_main)
    bar.update(state.position.step)
    while state.position.step < len(groups):
        i = state.position.step
        layer_step(ctx, state, i, groups[i], p=0.0 if one_shot else ctx.config.p)
        bar.update(1)
    bar.close()
    state.position = Position(stage="final", step=len(groups), chunk=0, pass_index=state.position.pass_index)


def layer_step(ctx: RunContext, state: LoopState, i: int, names: list[str], p: float) -> None:
    """Layer step ``i`` (prune ``names``, fine-tune ``p`` epochs), resumable at chunk boundaries."""
    chunks = _chunks(ctx.train, p)
    t_step = time.perf_counter()
    if state.position.chunk == 0:
        prune_step(ctx, state, i, names)
        if not chunks:
            state.optimizer_state = None
    finetune_step(ctx, state, chunks)
    recover_step(ctx, state, i, bool(chunks), t_step)


def _score_and_select(ctx: RunContext, names: list[str], i: int) -> tuple[dict, int]:
    """Rank 0 scores ``names`` and selects the plan; every rank gets the same plan and image count."""
    if ctx.is_main:
        scores, used = score_layers(ctx, names, i)
        cfg = ctx.config
        plan = select_filters(scores, cfg.ratio, round_to=cfg.round_to, min_keep=cfg.min_keep)  # sorted int lists
    if ctx.world > 1:  # rank 0 decides; every rank applies the same plan
        box = [plan, used] if ctx.is_main else [None, None]
        torch.distributed.broadcast_object_list(box, src=0)
        plan, used = box
    return plan, used


def prune_step(ctx: RunContext, state: LoopState, i: int, names: list[str]) -> None:
    """Score, select and remove the filters of ``names``, then the damage (val accuracy before fine-tuning);
    opens the step's record (``record.partial``) and timing."""
    rec, model = state.record, ctx.model
    before = rec.steps[-1]["acc_recovery"] if rec.steps else rec.baseline["val"]
    modules = dict(model.named_modules())
    filters_before = {n: modules[n].out_channels for n in names}
    t = time.perf_counter()
    plan, used = _score_and_select(ctx, names, i)
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    apply(model, plan, example_input(rec.input_size))
    ctx.runtime.prepare(model)
    ctx.runtime.sync()  # surgery's copies on CUDA are asynchronous: time them, not their launch
    t_prune = time.perf_counter() - t
    state.plans.append(plan)
    modules = dict(model.named_modules())
    damage = validate(ctx)
    rec.partial = {
        "step": i, "layer": names[0] if len(names) == 1 else "*", "layers": names,
        "filters_before": sum(filters_before.values()),
        "filters_kept": sum(modules[n].out_channels for n in names),
        "per_layer": {n: [filters_before[n], modules[n].out_channels] for n in names},
        "acc_before": before, "acc_damage": damage, "score_images": used, "finetune_images": 0,
        "optimizer_steps": 0, "train_loss": None,
    }
    state.timing.partial = {"score_s": t_score, "prune_s": t_prune, "train_s": 0.0, "data_s": 0.0,
                            "compute_s": 0.0, "wall_s": 0.0}


def finetune_step(ctx: RunContext, state: LoopState, chunks: list[int]) -> None:
    """The step's fine-tuning, chunk by chunk from the current one (a checkpoint between chunks)."""
    part, tpart = state.record.partial, state.timing.partial
    if state.position.chunk < len(chunks):
        _new_optimizer(ctx, state, ctx.config.lr)
    for j in range(state.position.chunk, len(chunks)):
        before_imgs = sum(chunks[:j])
        label = f"layer step {part['step'] + 1} fine-tune {part['layer']} (chunk {j + 1}/{len(chunks)})"
        stats = _train(ctx, state, ctx.train, chunks[j], None, before_imgs, label)
        part["finetune_images"] += stats.images
        part["optimizer_steps"] += stats.optimizer_steps
        part["train_loss"] = stats.loss
        tpart["train_s"] += stats.wall_time
        tpart["data_s"] += stats.data_time
        tpart["compute_s"] += stats.compute_time
        state.position.chunk = j + 1
        if j + 1 < len(chunks):
            checkpoint(ctx, state)


def recover_step(ctx: RunContext, state: LoopState, i: int, trained: bool, t_step: float) -> None:
    """The recovery (val accuracy after fine-tuning; the damage when nothing was trained) and the step's
    cost; closes the step's record, writes its event and checkpoints."""
    rec, part, tpart = state.record, state.record.partial, state.timing.partial
    recovery = validate(ctx) if trained else part["acc_damage"]
    part["acc_recovery"] = recovery
    part.update(cost(ctx.model, rec.input_size))
    part["damage"] = part["acc_before"]["top1"] - part["acc_damage"]["top1"]
    part["recovered"] = recovery["top1"] - part["acc_damage"]["top1"]
    tpart["wall_s"] += time.perf_counter() - t_step
    tpart["images_per_s"] = part["finetune_images"] / tpart["train_s"] if tpart["train_s"] else 0.0
    timing = {k: round(v, 4) for k, v in tpart.items()}
    rec.steps.append(part)
    state.timing.steps.append(timing)
    rec.partial = None
    state.timing.partial = None
    state.optimizer = None
    emit(ctx, state, "layer_step", timing=timing, **part)
    state.position.step, state.position.chunk = i + 1, 0
    checkpoint(ctx, state, f"step_{i:02d}")


def final_finetune(ctx: RunContext, state: LoopState) -> None:
    """Final fine-tune of ``q`` epochs with val top-1/top-5 after every epoch; leaves the selected weights."""
    cfg, rec = ctx.config, state.record
    stream = ctx.train_final
    chunks = _chunks(stream, cfg.q)
    total, n, base_lr = sum(chunks), stream.pass_images, cfg.effective_final_lr

    def lr_fn(t):
        return lr_at(t, total, base_lr, cfg.schedule, n, cfg.step_epochs, cfg.gamma)

    if state.position.chunk < len(chunks):
        _new_optimizer(ctx, state, base_lr)
    for j in range(state.position.chunk, len(chunks)):
        before_imgs = sum(chunks[:j])
        stats = _train(ctx, state, stream, chunks[j], lr_fn, before_imgs, final_label(ctx, j, len(chunks)))
        acc = validate(ctx)
        epoch = min(float(j + 1), cfg.q)
        row = {"epoch": epoch, "images": stats.images, "images_total": before_imgs + stats.images,
               "optimizer_steps": stats.optimizer_steps, "val": acc, "train_loss": stats.loss,
               "lr_end": lr_fn(before_imgs + stats.images)}
        rec.final.append(row)
        timing = {k: v for k, v in stats.to_dict().items() if k.endswith("_s")}
        state.timing.final.append(timing)
        best = rec.best
        if cfg.select == "last" or best is None or (acc["top1"], -acc["loss"]) > (best["top1"], -best["loss"]):
            rec.best = {"epoch": epoch, "top1": acc["top1"], "loss": acc["loss"]}
            # the current weights are the selected ones after the last epoch: no copy
            state.best_state = state_dict_cpu(ctx.model) if cfg.select == "best" and j + 1 < len(chunks) else None
        emit(ctx, state, "epoch", timing=timing, **row)
        state.position.chunk = j + 1
        checkpoint(ctx, state, f"final_{j + 1:03d}")
    state.optimizer = None
    if state.best_state is not None:
        ctx.model.load_state_dict(state.best_state)
    state.position.stage, state.position.chunk = "done", 0
