"""The last stage of a run: test once on the selected model, save it, and assemble ``summary.json`` from the
:class:`~pruning.loop.state.Record` (definitions of the derived measures: :mod:`pruning.loop.engine`)."""

from __future__ import annotations

from ..cost import device_name
from ..surgery import current_plan
from .context import RunContext
from .evaluate import evaluate
from .rundir import code_version
from .stages import cost, emit
from .state import LoopState

PEAK_TOL = 0.005  # epochs_to_peak: first epoch within this of the best final val top-1
#: Final-phase schedules under which the epoch of the val peak measures how fast the network recovers.
#: Under an annealed LR (cosine to 0, step decay) the val curve keeps rising while the LR falls, so its
#: peak lands near the last epoch whatever the network: the schedule's doing, not a recovery speed.
RECOVERY_SCHEDULES = ("constant",)


def _first_epoch(rows, pred):
    for r in rows:
        if pred(r["val"]["top1"]):
            return r["epoch"]
    return None


def _final_block(ctx: RunContext, state: LoopState, after_steps: dict) -> dict:
    """The summary's ``final``: epochs, the selected one, and the speed-of-recovery measures."""
    rec, schedule = state.record, ctx.config.schedule
    rows = rec.final
    best_top1 = max((r["val"]["top1"] for r in rows), default=None)
    selected = next((r for r in rows if rec.best and r["epoch"] == rec.best["epoch"]), None)
    return {"epochs": rows, "selected_epoch": None if selected is None else selected["epoch"],
            "val": selected["val"] if selected else after_steps,
            "epochs_to_peak": None if best_top1 is None or schedule not in RECOVERY_SCHEDULES
            else _first_epoch(rows, lambda a: a >= best_top1 - PEAK_TOL),
            "epochs_to_peak_note": None if schedule in RECOVERY_SCHEDULES else
            f"not measured: the final LR is annealed (schedule={schedule!r}), so the val peak is where "
            "the LR ends, not how fast the network recovers; use schedule='constant'",
            "epochs_to_baseline": _first_epoch(rows, lambda a: a >= rec.baseline["val"]["top1"])}


def finish(ctx: RunContext, state: LoopState) -> dict:
    """Test once on the selected model, save it, and assemble the summary."""
    rec, cfg = state.record, ctx.config
    if state.position.stage != "done":
        raise RuntimeError(f"finish() at position {state.position}")
    test = None
    if ctx.test is not None:
        test = evaluate(ctx.model, ctx.test, ctx.runtime, ctx.logit_subset)
        emit(ctx, state, "test", test=test, selected_epoch=(rec.best or {}).get("epoch"))
    final_cost = cost(ctx.model, rec.input_size)
    ctx.out.save_model(ctx.model)
    base, steps, rows = rec.baseline, rec.steps, rec.final
    after_steps = steps[-1]["acc_recovery"] if steps else base["val"]
    images = {
        "scoring": sum(s["score_images"] for s in steps),
        "finetune_steps": sum(s["finetune_images"] for s in steps),
        "finetune_final": sum(r["images"] for r in rows),
        "train_images_per_epoch": ctx.train.pass_images,
        "final_images_per_epoch": ctx.train_final.pass_images,
    }
    images["finetune_total"] = images["finetune_steps"] + images["finetune_final"]
    return {
        "run_hash": ctx.run_hash, "config_hash": cfg.hash(), "config": cfg.to_dict(), "meta": ctx.meta,
        "code_version": code_version(),
        "device": device_name(ctx.runtime.device, style="summary"), "world_size": ctx.world,
        "input_size": rec.input_size, "layers": rec.layers,
        "baseline": base,
        "steps": steps,
        "after_steps": {"val": after_steps},
        "final": _final_block(ctx, state, after_steps),
        "test": test,
        "cost": {**final_cost, "params_ratio": final_cost["params"] / base["params"],
                 "macs_ratio": final_cost["macs"] / base["macs"]},
        "images": images,
        "plan": current_plan(ctx.model),
        "model_files": ctx.out.model_files(),
    }
