"""Algorithm 1 on a trained detector's backbone (paper sec. 6, "Directly pruning Faster RCNN"; Table 6).

For each target conv, in ``order`` (default ``last_to_first``: conv5_3 first, Algorithm 1's order), one
*layer step*: score the conv's filters with ``pruning.score_filters`` on ``detector.backbone``, keep the
``n - floor(ratio * n)`` best (``pruning.select_filters``, ``round_to``/``min_keep``), remove the others
with ``pruning.apply_plan(detector, plan)`` (the detector's pruning proxy makes the next conv, or for
conv5_3 the RPN conv and fc6, follow), then fine-tune ``iters_per_layer`` iterations.  After the last step,
``final_iters`` iterations of final fine-tune; test mAP when ``test_data`` is given.

Fine-tuning is :func:`pruning.detection.train.train_step` on one data order (``seed``) running through all
phases: phase ``j`` (layer step ``j``, then the final one) starts at the iteration where the previous phase
ended, each phase with a new SGD optimizer.  Layer steps use the constant ``lr``; the final fine-tune
follows ``steps``/``gamma``/``warmup_iters`` counted from its own start.  Frozen parameters stay frozen
after surgery (``pruning.apply_plan`` keeps ``requires_grad=False``).

Scoring data.  Weight criteria (``l1``, ``l2``, ``fpgm``, ``bn_scale``, ``random``) read no data.
Activation criteria (``mean_activation``, ``entropy``, ``scaled_entropy``, ``apoz``) run the backbone in eval
mode on ``score_images`` images of ``score_data`` (default ``train_data``): step ``j`` reads the first
``score_images`` items of a permutation seeded ``seed * 7919 + j``, after ``set_epoch(j)``; each image is
resized (bilinear) to a ``score_size`` x ``score_size`` square (default: the detector's ``min_size``) so
images batch (8 per batch), normalised with the detector's ``image_mean``/``image_std``; labels are dummy
zeros.  Gradient criteria (``sensitivity``, ``sensitivity_batch``, ``taylor``, ``class_specific``,
``linear_ensemble``) are refused: they would need the detection loss, which is not offered.

Checkpoints: after every layer step, every ``checkpoint_every`` iterations inside a phase, and after the
final fine-tune; a killed run resumes there and ends with the uninterrupted run's state_dict and plan (CPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..cost import count_params, device_name
from ..loop.config import ORDERS, canonical_hash, check_types
from ..loop.rng import rng_state, set_rng_state
from ..loop.rundir import RunDir, optimizer_state_cpu, save_checkpoint, state_dict_cpu, write_json_atomic
from ..loop.stages import Stopped, progress_bar
from ..loop.train import Runtime
from ..registry import get_criterion
from ..score import score_filters
from ..select import select_filters
from ..surgery import apply_plan, current_plan
from .evaluate import evaluate_detector
from .io import detector_doc, save_detector
from .train import (RECIPE_FIELDS, DetTrainConfig, IterationData, LossWindow, SGDRecipe, _set_epoch,
                    config_from_dict, lr_at, make_optimizer, numbers_config, prepare_run_dir, train_step)

log = logging.getLogger(__name__)

#: Statistics passes a detector cannot serve without the detection loss.
LOSS_PASSES = ("per_image_grad", "batch_grad", "masks")
SCORE_BATCH = 8


@dataclass(frozen=True)
class DetPruneConfig(SGDRecipe):
    """Everything that determines a direct-prune run (module docstring).  The fine-tuning fields
    (:class:`~pruning.detection.train.SGDRecipe`) mean what they mean in
    :class:`~pruning.detection.train.DetTrainConfig` (checked by it)."""

    criterion: str
    ratio: float
    iters_per_layer: int
    final_iters: int
    layers: str | tuple[str, ...] = "all"
    order: str = "last_to_first"
    criterion_options: dict | None = None
    score_images: int = 64
    score_size: int | None = None
    round_to: int = 1
    min_keep: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            crit = get_criterion(self.criterion)
        except KeyError as exc:
            raise ValueError(f"criterion={self.criterion!r}: {exc.args[0]}") from None
        if crit.needs in LOSS_PASSES:
            raise ValueError(f"criterion={self.criterion!r} needs loss gradients ({crit.needs}); on a detector that "
                             "would be the detection loss, which is not offered: choose a weight criterion (l1, l2, "
                             "fpgm, bn_scale, random) or an activation criterion (mean_activation, entropy, "
                             "scaled_entropy, apoz)")
        check_types(self, {"ratio": "a number", "iters_per_layer": "an integer", "final_iters": "an integer",
                           "score_images": "an integer", "round_to": "an integer", "min_keep": "an integer",
                           "seed": "an integer", "order": "a name"})
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"ratio={self.ratio} must be in [0, 1) (fraction of filters removed per layer)")
        if min(self.iters_per_layer, self.final_iters) < 0 or self.score_images < 1:
            raise ValueError(f"iters_per_layer={self.iters_per_layer} and final_iters={self.final_iters} must be "
                             f">= 0, score_images={self.score_images} >= 1")
        if self.score_size is not None and (isinstance(self.score_size, bool) or not isinstance(self.score_size, int)
                                            or self.score_size < 16):
            raise ValueError(f"score_size={self.score_size!r} must be an integer >= 16 (pixels) or None")
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} is not valid; choose one of: {', '.join(ORDERS)}")
        layers = self.layers
        if not isinstance(layers, str):
            if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(x, str) for x in layers) \
                    or len(set(layers)) != len(layers):
                raise ValueError(f"layers={layers!r} must be 'all' or a non-empty list of distinct detector conv "
                                 "names (e.g. ['backbone.28', 'backbone.26'])")
            object.__setattr__(self, "layers", tuple(layers))
        elif layers != "all":
            raise ValueError(f"layers={layers!r}: give 'all' (every backbone conv) or a list of detector conv names")
        object.__setattr__(self, "steps", self.finetune(1, final=True).steps)  # checked by DetTrainConfig

    def finetune(self, iterations: int, final: bool) -> DetTrainConfig:
        """The :class:`DetTrainConfig` of a phase: a layer step's (constant ``lr``) or the final one's."""
        fields = {k: getattr(self, k) for k in RECIPE_FIELDS}
        if not final:
            fields.update(steps=(), warmup_iters=0)
        return DetTrainConfig(iterations=max(1, iterations), seed=self.seed, **fields)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(layers=self.layers if isinstance(self.layers, str) else list(self.layers), steps=list(self.steps))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetPruneConfig":
        return config_from_dict(cls, d)

    def hash(self) -> str:
        return canonical_hash(self.to_dict())


def target_layers(detector: nn.Module, config: DetPruneConfig) -> list[str]:
    """The detector conv names to prune, in the order they are pruned."""
    from .model import backbone_layers

    every = backbone_layers(detector)
    if config.layers == "all":
        names = list(every)
    else:
        unknown = [n for n in config.layers if n not in every]
        if unknown:
            raise ValueError(f"layers {unknown} are not backbone convs of this detector; valid: {', '.join(every)}")
        names = list(config.layers)
    if config.order == "given":
        return names
    names.sort(key=every.index)
    return names[::-1] if config.order == "last_to_first" else names


class ScoreImages:
    """Re-iterable ``(images, labels)`` batches for activation criteria (module docstring)."""

    def __init__(self, dataset, detector, count: int, size: int, seed: int, step: int):
        n = min(count, len(dataset))
        g = torch.Generator().manual_seed(seed * 7919 + step)
        self.indices = torch.randperm(len(dataset), generator=g)[:n].tolist()
        self.dataset, self.size, self.step = dataset, size, step
        self.mean = torch.tensor(detector.transform.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(detector.transform.image_std).view(1, 3, 1, 1)

    def __iter__(self):
        _set_epoch(self.dataset, self.step)
        for start in range(0, len(self.indices), SCORE_BATCH):
            images = [self.dataset[i][0] for i in self.indices[start:start + SCORE_BATCH]]
            x = torch.cat([F.interpolate(im[None].float(), size=(self.size, self.size), mode="bilinear",
                                         align_corners=False) for im in images])
            yield (x - self.mean) / self.std, torch.zeros(len(images), dtype=torch.long)


def score_layer(detector: nn.Module, name: str, config: DetPruneConfig, score_data, step: int) -> torch.Tensor:
    """One score per filter of detector conv ``name`` (module docstring)."""
    rel = name[len("backbone."):]
    crit = get_criterion(config.criterion)
    data = None
    if crit.needs != "weights":
        size = config.score_size or int(detector.transform.min_size[-1])
        data = ScoreImages(score_data, detector, config.score_images, size, config.seed, step)
    scores = score_filters(detector.backbone, config.criterion, [rel], data=data,
                           num_images=None if data is None else config.score_images,
                           seed=config.seed * 1000 + step, options=config.criterion_options or None)
    return scores[rel]


def prune_step(detector: nn.Module, name: str, config: DetPruneConfig, score_data, step: int) -> dict:
    """Score, select and remove the filters of ``name``; return the step's plan ``{name: kept indices}``."""
    scores = score_layer(detector, name, config, score_data, step)
    plan = select_filters({name: scores}, config.ratio, round_to=config.round_to, min_keep=config.min_keep)
    apply_plan(detector, plan)  # frozen parameters stay frozen (pruning.surgery)
    return plan


class _PruneState:
    """Where a direct-prune run stands: ``step`` layer steps done (``len(layers)`` = in the final phase),
    ``phase_iter`` iterations of the current phase done, the plans so far, the per-step records."""

    def __init__(self, detector, runtime, ck: dict | None):
        self.detector, self.runtime = detector, runtime
        self.step, self.phase_iter, self.events, self.elapsed, self.done = 0, 0, 0, 0.0, False
        self.plans, self.records, self.partial, self.baseline, self.final = [], [], None, None, None
        self.optimizer, self.window, self.optimizer_state = None, LossWindow(), None
        if ck is None:
            return
        for plan in json.loads(ck["plans"]):
            apply_plan(detector, plan)
        detector.load_state_dict(ck["model"])
        for key in ("step", "phase_iter", "events", "elapsed", "done"):
            setattr(self, key, ck[key])
        rec = json.loads(ck["record"])
        self.plans, self.records, self.partial = json.loads(ck["plans"]), rec["steps"], rec["partial"]
        self.baseline, self.final, self.window = rec["baseline"], rec["final"], LossWindow(rec["window"])
        self.optimizer_state = ck.get("optimizer")  # a checkpoint inside a phase: its optimizer
        set_rng_state(ck["rng"])

    def checkpoint(self, rundir: RunDir, run_id: str, elapsed: float) -> None:
        record = {"steps": self.records, "partial": self.partial, "baseline": self.baseline, "final": self.final,
                  "window": self.window.state()}
        save_checkpoint(rundir.path / "checkpoints" / "last.pt", {
            "run_hash": run_id, "step": self.step, "phase_iter": self.phase_iter, "events": self.events,
            "elapsed": elapsed, "done": self.done, "plans": json.dumps(self.plans), "record": json.dumps(record),
            "model": state_dict_cpu(self.detector), "rng": rng_state(),
            "optimizer": None if self.optimizer is None else optimizer_state_cpu(self.optimizer)})


def prune_detector(detector: nn.Module, config: DetPruneConfig, train_data, out_dir, score_data=None, val_data=None,
                   test_data=None, device=None, resume: bool = True, progress: bool = False,
                   stop_after: int | None = None, num_workers: int = 0, meta: dict | None = None,
                   class_names=None) -> dict:
    """Prune the trained ``detector`` in place (module docstring), writing the run directory ``out_dir``
    (docs/detection-training.md) and returning the summary.  ``stop_after``: stop after that many
    checkpoints of this call, as if killed (raises ``pruning.loop.Stopped``)."""
    if not isinstance(config, DetPruneConfig):
        raise ValueError(f"config must be a DetPruneConfig; got {type(config).__name__}")
    detector_doc(detector)  # a detector that could not be saved at the end is refused before pruning
    rundir = RunDir(out_dir)
    done = rundir.completed_summary(resume)
    if done is not None:
        return done
    layers = target_layers(detector, config)
    sizes = {"train_images": len(train_data), "val_images": None if val_data is None else len(val_data),
             "test_images": None if test_data is None else len(test_data),
             "detector": {"params": count_params(detector), "plan": current_plan(detector)}}
    meta = dict(meta or {})
    run_id = canonical_hash({"config": numbers_config(config), "meta": meta, "data": sizes})
    runtime = Runtime.create(device, amp=True, channels_last=False)
    runtime.prepare(detector)
    ctx = _Run(config, rundir, run_id, layers, train_data, score_data if score_data is not None else train_data,
               val_data, test_data, progress, stop_after, num_workers, class_names)
    try:
        ck = prepare_run_dir(rundir, run_id, config, meta, resume)
        if ck is None:  # a fresh start: sampling and dropout follow the config's seed, not the caller's RNG
            torch.manual_seed(config.seed)
        state = _PruneState(detector, runtime, ck)
        ctx.t0, ctx.elapsed0 = time.perf_counter(), state.elapsed
        summary = ctx.run(state, sizes["detector"]["params"])
        save_detector(detector, rundir.path / "detector")
        write_json_atomic(rundir.path / "summary.json", summary)
        return summary
    finally:
        rundir.release()


@dataclass
class _Run:
    """What a direct-prune run works with (its arguments), and its stages."""

    config: DetPruneConfig
    rundir: RunDir
    run_id: str
    layers: list
    train_data: object
    score_data: object
    val_data: object
    test_data: object
    progress: bool
    stop_after: int | None
    num_workers: int
    class_names: object
    t0: float = 0.0
    elapsed0: float = 0.0
    checkpoints: int = 0

    def emit(self, state: _PruneState, event: dict) -> None:
        self.rundir.append_event(event)
        state.events += 1

    def checkpoint(self, state: _PruneState) -> None:
        state.checkpoint(self.rundir, self.run_id, self.elapsed0 + time.perf_counter() - self.t0)
        self.checkpoints += 1
        if self.stop_after is not None and self.checkpoints >= self.stop_after and not state.done:
            raise Stopped(f"stopped after {self.checkpoints} checkpoints (stop_after)")

    def evaluate(self, state: _PruneState, data) -> dict | None:
        if data is None:
            return None
        res = evaluate_detector(state.detector, data, device=state.runtime.device, class_names=self.class_names,
                                num_workers=self.num_workers)
        return {"map07": res["map07"], "map10": res["map10"]}

    def run(self, state: _PruneState, params_before: int) -> dict:
        cfg = self.config
        if state.baseline is None:
            state.baseline = {"val": self.evaluate(state, self.val_data), "params": params_before}
            self.emit(state, {"event": "baseline", **state.baseline})
        for j in range(state.step, len(self.layers)):
            self.layer_step(state, j)
        if not state.done:
            self.finetune(state, cfg.final_iters, final=True)
            state.final = {"val": self.evaluate(state, self.val_data), "test": self.evaluate(state, self.test_data),
                           "params": count_params(state.detector)}
            self.emit(state, {"event": "final", **state.final})
            state.done, state.optimizer = True, None
            self.checkpoint(state)
        cost = {"params_before": params_before, "params_after": state.final["params"]}
        return {"plan": current_plan(state.detector), "steps": state.records, "baseline": state.baseline,
                "final": state.final, "cost": cost, "layers": self.layers, "run_hash": self.run_id,
                "config_hash": cfg.hash(), "device": device_name(state.runtime.device, "summary"),
                "time_s": round(self.elapsed0 + time.perf_counter() - self.t0, 3)}

    def layer_step(self, state: _PruneState, j: int) -> None:
        cfg, name = self.config, self.layers[j]
        if state.partial is None:  # not yet pruned in this step (else: resumed inside its fine-tune)
            before = _filters(state.detector, name)
            plan = prune_step(state.detector, name, cfg, self.score_data, j)
            state.plans.append(plan)
            prev = state.records[-1]["val_after"] if state.records else state.baseline["val"]
            state.partial = {"step": j, "layer": name, "filters_before": before, "filters_kept": len(plan[name]),
                             "val_before": prev}
            log.info("layer step %d/%d: %s keeps %d of %d filters", j + 1, len(self.layers), name, len(plan[name]),
                     before)
        self.finetune(state, cfg.iters_per_layer, final=False)
        rec = {**state.partial, "val_after": self.evaluate(state, self.val_data),
               "params": count_params(state.detector), "plan": state.plans[-1]}
        state.records.append(rec)
        state.partial, state.optimizer, state.step, state.phase_iter = None, None, j + 1, 0
        self.emit(state, {"event": "layer_step", **rec})
        self.checkpoint(state)

    def finetune(self, state: _PruneState, iterations: int, final: bool) -> None:
        """Iterations ``state.phase_iter .. iterations - 1`` of the current phase (module docstring)."""
        cfg = self.config
        tc = cfg.finetune(iterations, final)
        phase = "final" if final else f"step {state.step}"
        if state.phase_iter >= iterations:
            return
        state.optimizer = make_optimizer(state.detector, tc)
        if state.optimizer_state is not None:
            state.optimizer.load_state_dict(state.optimizer_state)
            state.optimizer_state = None
        start = state.step * cfg.iters_per_layer + state.phase_iter
        batches = IterationData(self.train_data, cfg.batch_size, cfg.seed, self.num_workers).iterate(start)
        bar = progress_bar(iterations, f"fine-tune ({phase})", self.progress)
        bar.update(state.phase_iter)
        for items in batches:
            lr = lr_at(state.phase_iter, tc)
            state.window.add(train_step(state.detector, items, state.optimizer, tc.micro_batch, state.runtime, lr),
                             len(items))
            state.phase_iter += 1
            bar.update(1)
            t = state.phase_iter
            if t % cfg.log_every == 0 or t == iterations:
                self.emit(state, {**state.window.pop(t), "phase": phase, "lr": lr})
            if t == iterations:
                break
            if t % cfg.checkpoint_every == 0:
                self.checkpoint(state)
        bar.close()


def _filters(detector: nn.Module, name: str) -> int:
    return dict(detector.named_modules())[name].out_channels

