"""The stages of a run (layer steps, final fine-tune, summary) and the adapters
to the pruning core (``prunable_layers``, ``score_filters``, ``select_filters``,
``apply_plan``, ``count_cost``).  Functions here take the :class:`engine.Loop`
whose state they advance; every stage ends in a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch
from torch import nn

from ..cost import count_cost
from ..layers import prunable_layers
from ..plan import save_pruned
from ..score import score_filters
from ..select import select_filters
from ..surgery import apply_plan, current_plan
from .checkpoint import state_dict_cpu
from .evaluate import evaluate
from .train import lr_at, make_optimizer, train_chunk

log = logging.getLogger(__name__)

PEAK_TOL = 0.005  # epochs_to_peak: first epoch within this of the best final val top-1
#: Final-phase schedules under which the epoch of the val peak measures how fast the network recovers.
#: Under an annealed LR (cosine to 0, step decay) the val curve keeps rising while the LR falls, so its
#: peak lands near the last epoch whatever the network: the schedule's doing, not a recovery speed.
RECOVERY_SCHEDULES = ("constant",)


# ------------------------------------------------------------------ core adapters
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
    dev = next(model.parameters()).device
    plan = {k: [int(i) for i in v] for k, v in plan.items()}
    return apply_plan(model, plan, example.to(dev))


def cost(model: nn.Module, input_size) -> dict:
    """``{"params", "macs"}`` of ``model`` for one image of ``input_size``."""
    c = count_cost(model, input_size)
    return {"params": c["params"], "macs": c["macs"]}


class _Batches:
    """A re-iterable view of one pass of a stream (criteria may iterate more than once), in batches of
    exactly ``batch`` images (the global ``batch_size``; the last may be smaller) whatever the stream
    yields, so per-batch criteria see the same batches on any world size, accumulation and loader.
    Images go to the device, normalised like the training batches; labels stay on the host, where
    ``score_filters`` checks them against the scoring classes without waiting for the device (the
    stream has already kept only those classes) and then copies them over."""

    def __init__(self, stream, pass_index: int, budget, runtime, batch: int):
        self.stream, self.pass_index, self.budget, self.runtime = stream, pass_index, budget, runtime
        self.batch = int(batch)

    def __iter__(self):
        for x, y in rebatch(self.stream.batches(self.pass_index, self.budget), self.batch):
            yield self.runtime.images_to_device(x), y


def rebatch(batches, size: int):
    """``(images, labels)`` host batches regrouped into batches of exactly ``size`` (the last one may be
    smaller), in the same order; batches that already have ``size`` images pass through uncopied."""
    xs, ys, held = [], [], 0
    for x, y in batches:
        if not xs and len(y) == size:
            yield x, y
            continue
        xs.append(x)
        ys.append(y)
        held += len(y)
        while held >= size:
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            yield x_all[:size], y_all[:size]
            xs, ys = ([x_all[size:]], [y_all[size:]]) if held > size else ([], [])
            held -= size
    if held:
        yield torch.cat(xs), torch.cat(ys)


def score(loop, names: list[str], step: int) -> tuple[dict, int]:
    """Scores of ``names`` on the scoring stream and the number of images used.  Batches of the global
    ``batch_size``, computed in pieces of the micro-batch; with ``loop.score_head`` the loss is over the
    starting model's full classifier (:class:`~pruning.loop.models.FullHead`)."""
    cfg = loop.cfg
    data = _Batches(loop.score, step, cfg.score_images, loop.runtime, cfg.batch_size)
    head = loop.score_head.applied(loop.model) if loop.score_head is not None else contextlib.nullcontext()
    with head:
        scores = score_filters(loop.model, cfg.criterion, names, data=data, num_images=cfg.score_images,
                               classes=cfg.effective_score_classes, seed=cfg.seed * 1000 + step,
                               device=loop.runtime.device, options=cfg.criterion_options or None,
                               micro_batch=loop.micro)
    return dict(scores), scores.num_images


def _select(loop, scores: dict) -> dict:
    cfg = loop.cfg
    return select_filters(scores, cfg.ratio, round_to=cfg.round_to, min_keep=cfg.min_keep)  # sorted int lists


# ------------------------------------------------------------------ fine-tuning phases
def _chunks(loop, epochs: float, stream=None) -> list[int]:
    """Image budgets of the chunks of a phase of ``epochs`` epochs (each at most one epoch)."""
    n = (stream or loop.train).pass_images
    total = round(epochs * n)
    out = []
    while total > 0:
        out.append(min(n, total))
        total -= out[-1]
    return out


def _train(loop, budget: int, lr_fn, images_before: int, desc: str, stream=None):
    cfg = loop.cfg
    bar = None
    if loop.opts.progress and loop.main:
        from tqdm.auto import tqdm
        bar = tqdm(total=budget, desc=desc, unit="img", leave=False, dynamic_ncols=True)
    stats = train_chunk(loop.model, stream or loop.train, loop.pos["pass_index"], budget, loop.optimizer,
                        loop.runtime, cfg.accum_steps, lr_fn, images_before, bar)
    if bar is not None:
        bar.close()
    loop.pos["pass_index"] += 1
    log.info("%s: %d images in %.2fs (%.1f images/s; data %.2fs, compute %.2fs), loss %.4f", desc, stats.images,
             stats.wall_time, stats.images_per_s, stats.data_time, stats.compute_time, stats.loss)
    return stats


def _new_optimizer(loop, lr: float):
    cfg = loop.cfg
    loop.optimizer = make_optimizer(loop.model, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
    if loop._opt_state is not None:
        loop.optimizer.load_state_dict(loop._opt_state)
        loop._opt_state = None


def run_step(loop, i: int, names: list[str], p: float) -> None:
    """Layer step ``i`` (prune ``names``, fine-tune ``p`` epochs), resumable at chunk boundaries."""
    cfg = loop.cfg
    chunks = _chunks(loop, p)
    t_step = time.perf_counter()
    if loop.pos["chunk"] == 0:
        before = loop.rec["steps"][-1]["acc_recovery"] if loop.rec["steps"] else loop.rec["baseline"]["val"]
        modules = dict(loop.model.named_modules())
        filters_before = {n: modules[n].out_channels for n in names}
        t = time.perf_counter()
        if loop.main:
            scores, used = score(loop, names, i)
            plan = _select(loop, scores)
        if loop.world > 1:  # rank 0 decides; every rank applies the same plan
            box = [plan, used] if loop.main else [None, None]
            torch.distributed.broadcast_object_list(box, src=0)
            plan, used = box
        t_score = time.perf_counter() - t
        t = time.perf_counter()
        apply(loop.model, plan, example_input(loop.rec["input_size"]))
        loop.runtime.prepare(loop.model)
        loop.runtime.sync()  # surgery's copies on CUDA are asynchronous: time them, not their launch
        t_prune = time.perf_counter() - t
        loop.plans.append(plan)
        modules = dict(loop.model.named_modules())
        damage = loop._val()
        loop.rec["partial"] = {
            "step": i, "layer": names[0] if len(names) == 1 else "*", "layers": names,
            "filters_before": sum(filters_before.values()),
            "filters_kept": sum(modules[n].out_channels for n in names),
            "per_layer": {n: [filters_before[n], modules[n].out_channels] for n in names},
            "acc_before": before, "acc_damage": damage, "score_images": used, "finetune_images": 0,
            "optimizer_steps": 0, "train_loss": None,
        }
        loop.timing["partial"] = {"score_s": t_score, "prune_s": t_prune, "train_s": 0.0, "data_s": 0.0,
                                  "compute_s": 0.0, "wall_s": 0.0}
        if not chunks:
            loop._opt_state = None
    part = loop.rec["partial"]
    tpart = loop.timing["partial"]
    if loop.pos["chunk"] < len(chunks):
        _new_optimizer(loop, cfg.lr)
    for j in range(loop.pos["chunk"], len(chunks)):
        before_imgs = sum(chunks[:j])
        stats = _train(loop, chunks[j], None, before_imgs, f"fine-tune {part['layer']}")
        part["finetune_images"] += stats.images
        part["optimizer_steps"] += stats.optimizer_steps
        part["train_loss"] = stats.loss
        tpart["train_s"] += stats.wall_time
        tpart["data_s"] += stats.data_time
        tpart["compute_s"] += stats.compute_time
        loop.pos["chunk"] = j + 1
        if j + 1 < len(chunks):
            loop._checkpoint()
    recovery = loop._val() if chunks else part["acc_damage"]
    part["acc_recovery"] = recovery
    part.update(cost(loop.model, loop.rec["input_size"]))
    part["damage"] = part["acc_before"]["top1"] - part["acc_damage"]["top1"]
    part["recovered"] = recovery["top1"] - part["acc_damage"]["top1"]
    tpart["wall_s"] += time.perf_counter() - t_step
    tpart["images_per_s"] = part["finetune_images"] / tpart["train_s"] if tpart["train_s"] else 0.0
    timing = {k: round(v, 4) for k, v in tpart.items()}
    loop.rec["steps"].append(part)
    loop.timing["steps"].append(timing)
    loop.rec["partial"] = None
    loop.timing.pop("partial", None)
    loop.optimizer = None
    loop._event("layer_step", timing=timing, **part)
    loop.pos.update(step=i + 1, chunk=0)
    loop._checkpoint(f"step_{i:02d}")


def run_final(loop) -> None:
    """Final fine-tune of ``q`` epochs with val top-1/top-5 after every epoch."""
    cfg = loop.cfg
    stream = loop.train_final
    chunks = _chunks(loop, cfg.q, stream)
    total = sum(chunks)
    n = stream.pass_images
    base_lr = cfg.effective_final_lr

    def lr_fn(t):
        return lr_at(t, total, base_lr, cfg.schedule, n, cfg.step_epochs, cfg.gamma)

    if loop.pos["chunk"] < len(chunks):
        _new_optimizer(loop, base_lr)
    for j in range(loop.pos["chunk"], len(chunks)):
        before_imgs = sum(chunks[:j])
        stats = _train(loop, chunks[j], lr_fn, before_imgs, f"final epoch {j + 1}/{len(chunks)}", stream)
        acc = loop._val()
        epoch = min(float(j + 1), cfg.q)
        row = {"epoch": epoch, "images": stats.images, "images_total": before_imgs + stats.images,
               "optimizer_steps": stats.optimizer_steps, "val": acc, "train_loss": stats.loss,
               "lr_end": lr_fn(before_imgs + stats.images)}
        loop.rec["final"].append(row)
        timing = {k: v for k, v in stats.to_dict().items() if k.endswith("_s")}
        loop.timing["final"].append(timing)
        best = loop.rec["best"]
        if cfg.select == "last" or best is None or (acc["top1"], -acc["loss"]) > (best["top1"], -best["loss"]):
            loop.rec["best"] = {"epoch": epoch, "top1": acc["top1"], "loss": acc["loss"]}
            if cfg.select == "best" and j + 1 < len(chunks):
                loop.best_state = state_dict_cpu(loop.model)
            else:
                loop.best_state = None  # the current weights are the selected ones
        loop._event("epoch", timing=timing, **row)
        loop.pos["chunk"] = j + 1
        loop._checkpoint(f"final_{j + 1:03d}")
    loop.optimizer = None
    if loop.best_state is not None:
        loop.model.load_state_dict(loop.best_state)
    loop.pos.update(stage="done", chunk=0)


# ------------------------------------------------------------------ summary
def _first_epoch(rows, pred):
    for r in rows:
        if pred(r["val"]["top1"]):
            return r["epoch"]
    return None


def finish(loop) -> dict:
    """Test once on the selected model, save it, and assemble the summary."""
    rec, cfg = loop.rec, loop.cfg
    if loop.pos["stage"] != "done":
        raise RuntimeError(f"finish() at position {loop.pos}")
    test = None
    if loop.test is not None:
        test = evaluate(loop.model, loop.test, loop.runtime, loop.logit_subset)
        loop._event("test", test=test, selected_epoch=(rec["best"] or {}).get("epoch"))
    final_cost = cost(loop.model, rec["input_size"])
    if loop.main and loop.out is not None:
        save_model(loop.model, loop.out / "model")
    base = rec["baseline"]
    rows = rec["final"]
    best_top1 = max((r["val"]["top1"] for r in rows), default=None)
    after_steps = rec["steps"][-1]["acc_recovery"] if rec["steps"] else base["val"]
    selected = next((r for r in rows if rec["best"] and r["epoch"] == rec["best"]["epoch"]), None)
    steps = rec["steps"]
    images = {
        "scoring": sum(s["score_images"] for s in steps),
        "finetune_steps": sum(s["finetune_images"] for s in steps),
        "finetune_final": sum(r["images"] for r in rows),
        "train_images_per_epoch": loop.train.pass_images,
        "final_images_per_epoch": loop.train_final.pass_images,
    }
    images["finetune_total"] = images["finetune_steps"] + images["finetune_final"]
    return {
        "run_hash": loop.hash, "config_hash": cfg.hash(), "config": cfg.to_dict(), "meta": loop.meta,
        "code_version": _code_version(),
        "device": _device_name(loop.runtime.device), "world_size": loop.world,
        "input_size": rec["input_size"], "layers": rec["layers"],
        "baseline": base,
        "steps": steps,
        "after_steps": {"val": after_steps},
        "final": {"epochs": rows, "selected_epoch": None if selected is None else selected["epoch"],
                  "val": selected["val"] if selected else after_steps,
                  "epochs_to_peak": None if best_top1 is None or cfg.schedule not in RECOVERY_SCHEDULES
                  else _first_epoch(rows, lambda a: a >= best_top1 - PEAK_TOL),
                  "epochs_to_peak_note": None if cfg.schedule in RECOVERY_SCHEDULES else
                  f"not measured: the final LR is annealed (schedule={cfg.schedule!r}), so the val peak is where "
                  "the LR ends, not how fast the network recovers; use schedule='constant'",
                  "epochs_to_baseline": _first_epoch(rows, lambda a: a >= base["val"]["top1"])},
        "test": test,
        "cost": {**final_cost, "params_ratio": final_cost["params"] / base["params"],
                 "macs_ratio": final_cost["macs"] / base["macs"]},
        "images": images,
        "plan": current_plan(loop.model),
        "model_files": None if loop.out is None else {"plan": "model/plan.json", "weights": "model/state_dict.pt"},
    }


def _code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distribution's version (the library does not import the data package for it)
        return version("imagenet52p")
    except PackageNotFoundError:
        return "unknown"


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return "cpu"


def save_model(model: nn.Module, directory) -> None:
    """The final pruned model: ``plan.json`` (cumulative plan) + ``state_dict.pt``, via
    ``pruning.save_pruned``; reload with ``pruning.load_pruned(model_fn, directory)``."""
    save_pruned(model, None, directory)
