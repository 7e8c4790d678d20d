"""The iteration trainer of a torchvision detector (docs/detection-training.md).

Definitions
  *Iteration* ``i`` (0-based): one SGD step on the next ``batch_size`` images (the **global** batch) of the
  data order, split into ``accum_steps`` micro-batches of ``batch_size / accum_steps`` images.  The step's
  loss is the image-weighted mean of the micro-batches' losses, ``sum_j (m_j / B) L_j`` with ``L_j`` the sum
  of torchvision's loss dict of micro-batch ``j``; it equals the full batch's loss exactly where torchvision's
  per-batch normalisation is per image (every image samples the same number of anchors and RoIs, no padding
  difference; see the docs for what breaks it).
  *Learning rate* of iteration ``i``: ``lr * gamma ** #{s in steps: i >= s}``, times
  ``warmup_factor + (1 - warmup_factor) * i / warmup_iters`` while ``i < warmup_iters``; biases (parameters
  named ``*.bias``) get ``bias_lr_factor`` times it and ``bias_weight_decay`` (py-faster-rcnn's ``lr_mult: 2,
  decay_mult: 0``), the other trainable parameters ``weight_decay``.  Frozen parameters (``requires_grad``
  False, e.g. conv1-2) are not in the optimizer and get no gradient.
  *Data order*: an endless stream of passes; pass ``e`` is ``torch.randperm(N)`` of a generator seeded with
  ``seed * 1_000_003 + e``; iteration ``i`` takes stream positions ``i * B .. i * B + B - 1`` (a batch may
  span two passes).  Before reading pass ``e`` the dataset's ``set_epoch(e)`` is called (flip decisions),
  so resuming at iteration ``k`` reads exactly the images an uninterrupted run reads.
  Mixed precision: bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..cost import device_name
from ..loop.config import SELECTIONS, canonical_hash, check_types
from ..loop.rng import rng_state, set_rng_state
from ..loop.rundir import RunDir, optimizer_state_cpu, save_checkpoint, state_dict_cpu, write_json_atomic
from ..loop.stages import Stopped, progress_bar
from ..loop.train import Runtime
from .evaluate import evaluate_detector
from .io import detector_doc, save_detector

_INT, _NUM = "an integer", "a number"
_KINDS = {"iterations": _INT, "lr": _NUM, "momentum": _NUM, "weight_decay": _NUM, "gamma": _NUM,
          "warmup_iters": _INT, "warmup_factor": _NUM, "batch_size": _INT, "accum_steps": _INT,
          "checkpoint_every": _INT, "log_every": _INT, "select": "a name", "seed": _INT,
          "bias_lr_factor": _NUM, "bias_weight_decay": _NUM}


@dataclass(frozen=True, kw_only=True)
class SGDRecipe:
    """The SGD recipe of a detector training phase (keyword-only fields, shared by :class:`DetTrainConfig` and
    :class:`pruning.detection.prune.DetPruneConfig`, whose fine-tuning phases are ``DetTrainConfig`` s built
    from these fields): py-faster-rcnn's values by default (see :class:`DetTrainConfig`)."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    steps: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 1e-3
    batch_size: int = 1
    accum_steps: int = 1
    bias_lr_factor: float = 2.0
    bias_weight_decay: float = 0.0
    checkpoint_every: int = 1000
    log_every: int = 20


#: The names of :class:`SGDRecipe`'s fields.
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(SGDRecipe))


@dataclass(frozen=True)
class DetTrainConfig(SGDRecipe):
    """Everything that determines the weights of one detector training run (module docstring).

    The defaults are py-faster-rcnn's VGG16 end2end solver (``models/pascal_voc/VGG16/faster_rcnn_end2end``)
    except ``iterations`` (70000 there, with ``steps=(50000,)``): lr 0.001, momentum 0.9, weight decay
    5e-4, 1 image per iteration, biases at 2x lr without weight decay.  ``checkpoint_every`` and
    ``log_every`` are in iterations; ``eval_every`` (None = only after the last iteration, when val data
    is given) evaluates val mAP for model selection; ``select`` keeps the ``last`` weights or those of the
    ``best`` val mAP07 (ties: the earlier evaluation).
    """

    iterations: int
    eval_every: int | None = None
    select: str = "last"
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self, _KINDS)
        if self.eval_every is not None and (isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int)
                                            or self.eval_every < 1):
            raise ValueError(f"eval_every={self.eval_every!r} must be a positive number of iterations or None")
        steps = self.steps
        if isinstance(steps, (str, bytes)) or not isinstance(steps, (list, tuple)) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps):
            raise ValueError(f"steps={steps!r} must be a list of iterations >= 1 at which lr is multiplied by gamma")
        if list(steps) != sorted(set(steps)):
            raise ValueError(f"steps={list(steps)} must be increasing, without repeats")
        object.__setattr__(self, "steps", tuple(steps))
        for name in ("iterations", "batch_size", "accum_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size={self.batch_size} (global images per iteration) is not divisible by "
                             f"accum_steps={self.accum_steps}; give a batch_size that is a multiple of accum_steps")
        if self.lr <= 0 or not 0 < self.gamma <= 1 or not 0 <= self.momentum < 1:
            raise ValueError(f"lr={self.lr} must be > 0, gamma={self.gamma} in (0, 1], momentum={self.momentum} in "
                             "[0, 1)")
        if min(self.weight_decay, self.bias_weight_decay, self.bias_lr_factor, self.warmup_iters) < 0:
            raise ValueError("weight_decay, bias_weight_decay, bias_lr_factor and warmup_iters must be >= 0")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"warmup_factor={self.warmup_factor} must be in (0, 1]")
        if self.select not in SELECTIONS:
            raise ValueError(f"select={self.select!r} is not valid; choose one of: {', '.join(SELECTIONS)}")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accum_steps

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetTrainConfig":
        return config_from_dict(cls, d)

    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON of :meth:`to_dict`."""
        return canonical_hash(self.to_dict())


def config_from_dict(cls, d: dict):
    """``cls(**d)`` of a config dataclass; unknown keys are a ``ValueError`` listing the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


#: Options that change no number (checkpoint and logging cadence: resume is bit-identical wherever it
#: restarts): left out of a run's identity, so changing them never refuses a resume.
CADENCE = ("checkpoint_every", "log_every")


def numbers_config(config) -> dict:
    """``config.to_dict()`` without the :data:`CADENCE` options: what a run's identity is made of."""
    return {k: v for k, v in config.to_dict().items() if k not in CADENCE}


def lr_at(i: int, config) -> float:
    """The base learning rate of iteration ``i`` (module docstring); ``config`` has ``lr``, ``steps``,
    ``gamma``, ``warmup_iters``, ``warmup_factor``."""
    lr = config.lr * config.gamma ** sum(1 for s in config.steps if i >= s)
    if i < config.warmup_iters:
        lr *= config.warmup_factor + (1 - config.warmup_factor) * i / config.warmup_iters
    return lr


def make_optimizer(detector: nn.Module, config) -> torch.optim.SGD:
    """SGD (momentum) over the trainable parameters: weights with ``weight_decay``, biases with
    ``bias_weight_decay`` and ``bias_lr_factor`` x the lr (each group's factor is its ``lr_factor``)."""
    trained = [(n, p) for n, p in detector.named_parameters() if p.requires_grad]
    weights, biases = [p for n, p in trained if not n.endswith(".bias")], [p for n, p in trained if n.endswith(".bias")]
    groups = [{"params": weights, "weight_decay": config.weight_decay, "lr_factor": 1.0},
              {"params": biases, "weight_decay": config.bias_weight_decay, "lr_factor": config.bias_lr_factor}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{type(detector).__name__} has no trainable parameter (all requires_grad=False)")
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def _set_epoch(data, epoch: int) -> None:
    """``set_epoch(epoch)`` on ``data`` and on the datasets it wraps (``Subset`` chains), where present."""
    while data is not None:
        fn = getattr(data, "set_epoch", None)
        if callable(fn):
            fn(epoch)
        data = getattr(data, "dataset", None)


def _items(batch):
    return batch  # the DataLoader "collate" of single items (batch_size=None): the item as it is


class IterationData:
    """The data order of the module docstring over a map-style dataset of ``(image, target)`` items."""

    def __init__(self, dataset, batch_size: int, seed: int, num_workers: int = 0):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or len(dataset) == 0:
            raise ValueError(f"train_data must be a non-empty map-style dataset of (image, target) items (len and "
                             f"[i]); got {type(dataset).__name__}")
        self.dataset, self.batch_size, self.seed, self.num_workers = dataset, int(batch_size), int(seed), num_workers

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=g).tolist()

    def iterate(self, start: int) -> Iterator[list]:
        """The item lists of iterations ``start, start + 1, ...`` (endless)."""
        epoch, offset = divmod(start * self.batch_size, len(self.dataset))
        batch = []
        while True:
            _set_epoch(self.dataset, epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)  # worker seeds: not the global RNG
            loader = DataLoader(Subset(self.dataset, self.order(epoch)[offset:]), batch_size=None,
                                collate_fn=_items, num_workers=self.num_workers, generator=g)
            for item in loader:
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0


def train_step(detector: nn.Module, items: list, optimizer: torch.optim.Optimizer, micro_batch: int,
               runtime: Runtime, lr: float) -> dict:
    """One iteration on ``items`` at base learning rate ``lr`` (module docstring): returns the image-weighted
    mean of each loss of torchvision's loss dict, as detached device tensors (no host synchronisation)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_factor", 1.0)
    detector.train()
    optimizer.zero_grad(set_to_none=True)
    dev, total = runtime.device, len(items)
    out: dict = {}
    for start in range(0, total, micro_batch):
        chunk = items[start:start + micro_batch]
        images = [img.to(dev, non_blocking=True) for img, _ in chunk]
        targets = [{"boxes": t["boxes"].to(dev), "labels": t["labels"].to(dev)} for _, t in chunk]
        with runtime.autocast():
            losses = detector(images, targets)
        weight = len(chunk) / total
        (sum(v.float() for v in losses.values()) * weight).backward()
        for k, v in losses.items():
            out[k] = out.get(k, 0.0) + v.detach().float() * weight
    optimizer.step()
    return out


class LossWindow:
    """Sums of each loss over the iterations since the last logged one (their mean is what is logged)."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in state.get("sums", {}).items()}
        self.count, self.t0, self.images = int(state.get("count", 0)), time.perf_counter(), 0

    def add(self, losses: dict, images: int) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.double()
        self.count += 1
        self.images += images

    def state(self) -> dict:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count}

    def pop(self, iteration: int) -> dict:
        """The event of the window ending at ``iteration``; a non-finite loss is a ``FloatingPointError``."""
        means = {k: float(v) / self.count for k, v in sorted(self.sums.items())}
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"training loss is not finite at iteration {iteration} ({means}); lower lr "
                                     "or add warmup_iters, and restart from an earlier checkpoint")
        wall = time.perf_counter() - self.t0
        row = {"event": "iteration", "iteration": iteration, **means, "loss": sum(means.values()),
               "images_per_s": round(self.images / wall, 3) if wall > 0 else 0.0}
        self.__init__()
        return row


def prepare_run_dir(rundir: RunDir, run_id: str, config, meta: dict, resume: bool) -> dict | None:
    """:meth:`pruning.loop.rundir.RunDir.prepare` for a detector run (a run directory is required): lock it,
    refuse another run's folder, write ``config.json``; return the checkpoint ``checkpoints/last.pt`` to resume
    from (its events file cut back to it), or None."""
    path = rundir.path
    if path is None or (path.exists() and not path.is_dir()):
        raise ValueError(f"out_dir={path} must be a run directory (new, or of this run), not None or a file")
    ck = rundir.prepare(run_id, config, meta, resume, required=("model", "rng", "events"))
    if ck is not None:
        rundir.truncate_events(int(ck["events"]))
    return ck


def train_detector(detector: nn.Module, train_data, config: DetTrainConfig, out_dir, val_data=None, device=None,
                   resume: bool = True, progress: bool = False, stop_after: int | None = None, num_workers: int = 0,
                   meta: dict | None = None, class_names=None) -> dict:
    """Train ``detector`` in place for ``config.iterations`` iterations (module docstring); write the run
    directory ``out_dir`` (docs/detection-training.md) and return the summary.  ``stop_after``: stop after
    that many iterations of this call, as if killed (raises ``pruning.loop.Stopped``)."""
    if not isinstance(config, DetTrainConfig):
        raise ValueError(f"config must be a DetTrainConfig; got {type(config).__name__}")
    detector_doc(detector)  # a detector that could not be saved at the end is refused before training
    if config.select == "best" and val_data is None:
        raise ValueError("select='best' needs val_data (val mAP chooses the weights); give val_data or select='last'")
    rundir = RunDir(out_dir)
    done = rundir.completed_summary(resume)
    if done is not None:
        return done
    meta = dict(meta or {})
    sizes = {"train_images": len(train_data), "val_images": None if val_data is None else len(val_data)}
    run_id = canonical_hash({"config": numbers_config(config), "meta": meta, "data": sizes})  # the run's identity
    runtime = Runtime.create(device, amp=True, channels_last=False)
    try:
        ck = prepare_run_dir(rundir, run_id, config, meta, resume)
        if ck is None:  # a fresh start: RPN/RoI sampling and dropout follow the config's seed, not the caller's RNG
            torch.manual_seed(config.seed)
        state = _TrainState(detector, config, runtime, ck)
        summary = _train_loop(state, rundir, run_id, train_data, val_data, progress, stop_after, num_workers,
                              class_names)
        if state.best_state is not None and config.select == "best":
            detector.load_state_dict(state.best_state)
        save_detector(detector, rundir.path / "detector")
        write_json_atomic(rundir.path / "summary.json", summary)
        return summary
    finally:
        rundir.release()


class _TrainState:
    """Where a training run stands: model on the device, optimizer, iteration, loss window, best val."""

    def __init__(self, detector, config, runtime, ck: dict | None):
        self.detector, self.config, self.runtime = runtime.prepare(detector), config, runtime
        self.optimizer = make_optimizer(detector, config)
        self.iteration, self.events, self.elapsed = 0, 0, 0.0
        self.best, self.best_state, self.last_val, self.window = None, None, None, LossWindow()
        if ck is not None:
            detector.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.iteration, self.events, self.elapsed = int(ck["iteration"]), int(ck["events"]), float(ck["elapsed"])
            self.best, self.last_val = json.loads(ck["best"]), json.loads(ck["last_val"])
            self.best_state, self.window = ck.get("best_state"), LossWindow(json.loads(ck["window"]))
            set_rng_state(ck["rng"])

    def checkpoint(self, rundir: RunDir, run_id: str, elapsed: float) -> None:
        save_checkpoint(rundir.path / "checkpoints" / "last.pt", {
            "run_hash": run_id, "iteration": self.iteration, "model": state_dict_cpu(self.detector),
            "optimizer": optimizer_state_cpu(self.optimizer), "rng": rng_state(), "events": self.events,
            "elapsed": elapsed, "best": json.dumps(self.best), "last_val": json.dumps(self.last_val),
            "best_state": self.best_state, "window": json.dumps(self.window.state())})


def _emit(state: _TrainState, rundir: RunDir, event: dict) -> None:
    rundir.append_event(event)
    state.events += 1


def _validate(state: _TrainState, val_data, class_names, num_workers) -> dict:
    """Val mAP07/mAP10 at the current iteration; keeps the best (mAP07, earlier on ties) for ``select``."""
    res = evaluate_detector(state.detector, val_data, device=state.runtime.device, class_names=class_names,
                            num_workers=num_workers)
    val = {"iteration": state.iteration, "map07": res["map07"], "map10": res["map10"]}
    if state.best is None or val["map07"] > state.best["map07"]:
        state.best = val  # after the last iteration the current weights are the best: no copy
        keep = state.config.select == "best" and state.iteration < state.config.iterations
        state.best_state = state_dict_cpu(state.detector) if keep else None
    state.last_val = val
    return val


def _train_loop(state: _TrainState, rundir, run_id, train_data, val_data, progress, stop_after, num_workers,
                class_names) -> dict:
    cfg = state.config
    order = IterationData(train_data, cfg.batch_size, cfg.seed, num_workers)
    start, t0 = state.iteration, time.perf_counter()
    bar = progress_bar(cfg.iterations, "detector training", progress)
    bar.update(start)
    batches = order.iterate(start) if start < cfg.iterations else iter(())
    for items in batches:
        losses = train_step(state.detector, items, state.optimizer, cfg.micro_batch, state.runtime,
                            lr_at(state.iteration, cfg))
        state.iteration += 1
        i = state.iteration
        state.window.add(losses, len(items))
        if i % cfg.log_every == 0 or i == cfg.iterations:
            _emit(state, rundir, {**state.window.pop(i), "lr": lr_at(i - 1, cfg)})
        evaluate_now = cfg.eval_every is not None and i % cfg.eval_every == 0
        if val_data is not None and (evaluate_now or i == cfg.iterations):
            _emit(state, rundir, {"event": "val", **_validate(state, val_data, class_names, num_workers)})
        if i % cfg.checkpoint_every == 0 or i == cfg.iterations:
            state.checkpoint(rundir, run_id, state.elapsed + time.perf_counter() - t0)
        bar.update(1)
        if stop_after is not None and i - start >= stop_after and i < cfg.iterations:
            bar.close()
            raise Stopped(f"stopped after {i - start} iterations (stop_after), at iteration {i}")
        if i >= cfg.iterations:
            break
    bar.close()
    state.runtime.sync()
    return {"iterations": state.iteration, "images": state.iteration * cfg.batch_size, "final_val": state.last_val,
            "best_val": state.best, "selected": cfg.select, "run_hash": run_id, "config_hash": cfg.hash(),
            "selected_val": state.best if cfg.select == "best" else state.last_val, "detector": "detector",
            "device": device_name(state.runtime.device, "summary"),
            "time_s": round(state.elapsed + time.perf_counter() - t0, 3)}

