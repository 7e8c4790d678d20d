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

Run directory (written by rank 0): ``config.json``, ``events.jsonl``,
``checkpoints/last.pt``, ``model/plan.json`` + ``model/weights.pt``,
``timing.json`` and, last, ``summary.json`` (its presence means complete).
Everything in ``summary.json`` and ``events.jsonl`` except the ``timing``
fields is a deterministic function of the config, the data and the seed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from . import steps as S
from .config import LoopConfig, RunOptions, run_hash
from .data import DataStream, dist_info
from .evaluate import evaluate
from .train import Runtime

log = logging.getLogger(__name__)

from .steps import PEAK_TOL  # noqa: E402,F401  (re-exported)


class Stopped(RuntimeError):
    """Raised when ``RunOptions.stop_after`` checkpoints have been written (test hook)."""


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _tqdm(total, desc, enabled, unit="it"):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, unit=unit, leave=False, dynamic_ncols=True)


class Loop:
    """One run.  Use :func:`run_loop` / :func:`pruning.prune_finetune` rather than this class."""

    def __init__(self, model: nn.Module, config: LoopConfig, train_data, val_data, test_data=None,
                 score_data=None, out_dir=None, options: RunOptions | None = None, meta: dict | None = None,
                 logit_subset=None, train_pass_images: int | None = None, batch_transform=None,
                 score_head=None):
        self.cfg, self.opts = config, options or RunOptions()
        if config.ratio > 0:
            import pruning
            pruning.get_criterion(config.criterion)  # an unknown name fails now, listing the valid ones
            if isinstance(config.layers, str) and config.layers not in pruning.PROTOCOLS:
                raise ValueError(f"layers={config.layers!r} is not a protocol ({', '.join(pruning.PROTOCOLS)}); "
                                 "give a protocol or a list of conv names")
        self.meta = dict(meta or {})
        self.hash = run_hash(config, self.meta)
        self.rank, self.world = dist_info()
        self.main = self.rank == 0
        self.runtime = Runtime.create(self.opts.device, self.opts.amp, self.opts.channels_last,
                                      self.opts.deterministic)
        if batch_transform is not None:
            self.runtime.normalize = batch_transform.to(self.runtime.device) if isinstance(
                batch_transform, nn.Module) else batch_transform
        self.out = None if out_dir is None else Path(out_dir)
        self.logit_subset = None if logit_subset is None else [int(c) for c in logit_subset]
        micro = config.micro_batch(self.world)  # batch_size is global: split over ranks and accumulation
        _check_loader_batch(train_data, micro, config, self.world)
        self.micro = micro
        self.score_head = score_head
        pin = self.runtime.is_cuda
        kw = dict(num_workers=self.opts.num_workers, pin_memory=pin)
        self.train = DataStream(train_data, micro, config.classes, config.data_fraction, config.seed,
                                shuffle=True, pass_images=train_pass_images, name="train", **kw)
        self.train_final = self.train
        if config.effective_final_data_fraction != config.data_fraction:
            self.train_final = DataStream(train_data, micro, config.classes, config.effective_final_data_fraction,
                                          config.seed, shuffle=True, pass_images=train_pass_images,
                                          name="train (final)", **kw)
        self.val = DataStream(val_data, micro, config.classes, 1.0, config.seed, shuffle=False, name="val", **kw)
        self.test = (None if test_data is None else
                     DataStream(test_data, micro, config.classes, 1.0, config.seed, shuffle=False, name="test", **kw))
        # scoring reads batches of the global batch_size (rank 0 only; pieces of `micro` on the device)
        self.score = DataStream(train_data if score_data is None else score_data, config.batch_size,
                                config.effective_score_classes, 1.0, config.seed + 1, shuffle=True,
                                name="score", split_ranks=False, **kw)
        self.model = model
        self.n_checkpoints = 0
        # bookkeeping that goes into checkpoints (JSON-able)
        self.rec: dict = {"baseline": None, "steps": [], "final": [], "partial": None, "best": None,
                          "test": None, "layers": None, "input_size": None}
        self.pos = {"stage": "baseline", "step": 0, "chunk": 0, "pass_index": 0}
        self.plans: list = []
        self.best_state = None
        self.optimizer = None
        self.events_written = 0
        self.timing: dict = {"steps": [], "final": []}

    # ---------------------------------------------------------------- files
    def _event(self, kind: str, timing: dict | None = None, **fields) -> None:
        ev = {"event": kind, **fields}
        if timing is not None:
            ev["timing"] = timing
        if self.main and self.out is not None:
            with open(self.out / "events.jsonl", "a") as f:
                f.write(json.dumps(ev, sort_keys=True) + "\n")
        self.events_written += 1
        log.info("%s %s", kind, {k: v for k, v in fields.items() if not isinstance(v, (list, dict))})

    def _checkpoint(self, tag: str | None = None) -> None:
        if self.out is not None:
            if self.main:
                payload = {
                    "run_hash": self.hash, "position": dict(self.pos),
                    "plans": json.dumps(self.plans), "model": ckpt.state_dict_cpu(self.model),
                    "optimizer": None if self.optimizer is None else ckpt.optimizer_state_cpu(self.optimizer),
                    "best_state": self.best_state, "rng": ckpt.rng_state(),
                    "events": self.events_written, "state": json.dumps(self.rec),
                    "timing": json.dumps(self.timing),
                }
                ckpt.save_checkpoint(self.out / "checkpoints" / "last.pt", payload)
                if tag and self.opts.keep_step_checkpoints:
                    ckpt.save_checkpoint(self.out / "checkpoints" / f"{tag}.pt", payload)
            if self.world > 1:
                torch.distributed.barrier()
        self.n_checkpoints += 1
        if self.opts.stop_after is not None and self.n_checkpoints >= self.opts.stop_after:
            raise Stopped(f"stopped after {self.n_checkpoints} checkpoints (RunOptions.stop_after)")

    def _restore(self, ck: dict) -> None:
        self.pos = dict(ck["position"])
        self.rec = json.loads(ck["state"])
        self.timing = json.loads(ck.get("timing") or '{"steps": [], "final": []}')
        self.plans = json.loads(ck["plans"])
        if self.rec.get("train_pass_images"):
            self.train._pass_images = int(self.rec["train_pass_images"])
        if self.rec.get("final_pass_images"):
            self.train_final._pass_images = int(self.rec["final_pass_images"])
        example = S.example_input(self.rec["input_size"])
        for plan in self.plans:
            S.apply(self.model, plan, example)
        self.model.load_state_dict(ck["model"])
        self.runtime.prepare(self.model)
        self.best_state = ck.get("best_state")
        self._opt_state = ck.get("optimizer")
        self.events_written = int(ck["events"])
        if self.main:
            ev = self.out / "events.jsonl"
            lines = ev.read_text().splitlines(keepends=True) if ev.exists() else []
            if len(lines) < self.events_written:
                raise ValueError(f"{ev} has {len(lines)} lines but the checkpoint expects "
                                 f"{self.events_written}; the run directory was modified")
            ev.write_text("".join(lines[:self.events_written]))
        ckpt.set_rng_state(ck["rng"])
        log.info("resumed %s at %s", self.out, self.pos)

    def _prepare_dir(self, resume: bool) -> dict | None:
        """Create/validate the run directory; return the checkpoint to resume from (or None)."""
        if self.out is None:
            if resume:
                raise ValueError("resume=True needs out_dir")
            return None
        cfg_json = {"run_hash": self.hash, "config_hash": self.cfg.hash(), "config": self.cfg.to_dict(),
                    "meta": self.meta, "world_size": self.world}
        last = self.out / "checkpoints" / "last.pt"
        existing = self.out / "config.json"
        if existing.exists():
            old = json.loads(existing.read_text())
            if old.get("run_hash") != self.hash:
                raise ValueError(f"{self.out} holds run {old.get('run_hash')} with another configuration; "
                                 f"use a new --out directory")
            if not resume:
                raise ValueError(f"{self.out} already holds this run; pass resume=True (--resume) to continue "
                                 f"it, or use a new directory")
        if self.world > 1:
            torch.distributed.barrier()  # every rank has checked the directory before rank 0 writes
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json(existing, cfg_json)
            if not last.exists():
                (self.out / "events.jsonl").write_text("")
        if self.world > 1:
            torch.distributed.barrier()
        if resume and last.exists():
            return ckpt.load_checkpoint(last, self.hash)
        return None

    # ---------------------------------------------------------------- run
    def run(self, resume: bool = False) -> dict:
        if self.out is not None and (self.out / "summary.json").exists():
            if not resume:
                raise ValueError(f"{self.out} holds a complete run (summary.json); use a new directory")
            log.info("%s is complete; returning its summary", self.out)
            return json.loads((self.out / "summary.json").read_text())
        torch.manual_seed(self.cfg.seed)
        ck = self._prepare_dir(resume)
        self._opt_state = None
        if ck is not None:
            self._restore(ck)
        else:
            self.runtime.prepare(self.model)
            self._baseline()
        t0 = time.perf_counter()
        if self.pos["stage"] == "steps":
            self._steps()
        if self.pos["stage"] == "final":
            self._final()
        summary = self._finish()
        log.info("run %s done in %.1fs", self.hash, time.perf_counter() - t0)
        return summary

    def _val(self) -> dict:
        return evaluate(self.model, self.val, self.runtime, self.logit_subset)

    def _baseline(self) -> None:
        for x, _ in self.val.batches(0):  # the first batch tells the input size
            break
        else:
            raise ValueError("val data yielded no images on this rank")
        self.rec["input_size"] = list(x.shape[1:])
        names = S.target_layers(self.model, self.cfg)
        self.rec["layers"] = names
        t = time.perf_counter()
        acc = self._val()
        cost = S.cost(self.model, self.rec["input_size"])
        self.rec["baseline"] = {"val": acc, **cost}
        self.rec["train_pass_images"] = self.train.pass_images  # stored: never counted again on resume
        self.rec["final_pass_images"] = self.train_final.pass_images
        self._event("baseline", timing={"wall_s": round(time.perf_counter() - t, 4)}, val=acc, layers=names,
                    train_images_per_epoch=self.train.pass_images, **cost)
        self.pos = {"stage": "steps" if self.cfg.ratio > 0 else "final", "step": 0, "chunk": 0, "pass_index": 0}
        self._checkpoint("baseline")

    def _steps(self) -> None:
        one_shot = self.cfg.one_shot
        groups = [self.rec["layers"]] if one_shot else [[n] for n in self.rec["layers"]]
        bar = _tqdm(len(groups), "layer steps", self.opts.progress and self.main)
        bar.update(self.pos["step"])
        while self.pos["step"] < len(groups):
            i = self.pos["step"]
            S.run_step(self, i, groups[i], p=0.0 if one_shot else self.cfg.p)
            bar.update(1)
        bar.close()
        self.pos = {"stage": "final", "step": len(groups), "chunk": 0, "pass_index": self.pos["pass_index"]}

    def _final(self) -> None:
        S.run_final(self)

    def _finish(self) -> dict:
        summary = S.finish(self)
        if self.main and self.out is not None:
            _write_json(self.out / "timing.json", self.timing)
            _write_json(self.out / "summary.json", summary)
        return summary


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
    return Loop(model, config, train_data, val_data, test_data, score_data, out_dir, options, meta,
                logit_subset, train_pass_images, batch_transform, score_head).run(resume)


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
