"""The ONE place that reads run directories (the Algorithm 1 engine's schema lives here only).

A results folder holds one run directory per cell, ``RESULTS/<cell id>/``, containing what
``pruning.loop.run_loop`` writes (``config.json``, ``events.jsonl``, ``checkpoints/``,
``model/``, ``summary.json`` last) plus the benchmark's own files:

``cell.json``   the cell identity (:meth:`benchmark.grid.Cell.to_dict`) and provenance:
                ``code_version``, ``class_sha256`` and ``class_set_name`` of the build used,
                ``device`` asked for, ``weights`` (the starting weights' kind, canonical name, file and
                sha256: :meth:`pruning.weights.WeightsSource.identity`); written before the run starts.
``latency.json`` measured inference latency of the unpruned and the final model
                (``pruning.measure_latency``) and ``speedup`` = unpruned / pruned latency
                (``bench.json`` in results folders written before issue 12's renaming: read as well).
``error.json``  a failed attempt: ``type``, ``message``, ``traceback``, ``attempt``, ``time``.

Cell states (:func:`cell_state`): ``done`` (``summary.json`` exists), ``failed``
(``error.json`` and no summary), ``partial`` (anything else written: a run that was
interrupted and can be resumed), ``pending`` (no directory or an empty one).

:func:`read_run` flattens one run into a :class:`RunRow` dict with these definitions
(accuracies are fractions in [0, 1]; ``top1``/``top5`` are on ``test``, evaluated once
on the selected model; when a build has no test split the selected epoch's ``val`` is
used and ``metric_split`` says so):

``damage``        mean over layer steps of ``acc_before - acc_damage`` (val top-1)
``damage_max``    the largest of those drops
``recovery``      mean over layer steps of ``acc_recovery - acc_damage`` (val top-1)
``epochs_to_recover``  first final fine-tune epoch within ``PEAK_TOL`` (0.5 points) of its best val top-1,
                  only under a constant final LR (None under an annealed schedule, whose peak is
                  where the LR ends; ``epochs_to_recover_note`` says so)
``score_data`` / ``score_head``  what a data criterion scored on and the classifier of its loss
                  (``benchmark.config.SCORE_DATA`` / ``SCORE_HEADS``; None for weight criteria)
``params_target`` / ``params_matched`` / ``reduced_ratio``  ``reduced`` cells: the pruned architecture's
                  parameter count, the reduced network's, and the uniform ratio that matched them
``epochs_to_baseline`` first final epoch at or above the unpruned val top-1 (None if never)
``images_finetune``    images used for fine-tuning (layer steps + final), ``images_scoring`` for scoring
``params_reduction`` / ``macs_reduction``  ``1 - pruned / unpruned``
``speedup``       unpruned latency / pruned latency (batch and device in ``latency.json``)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pruning.weights import weights_label

log = logging.getLogger(__name__)

CELL_FILE, ERROR_FILE, LATENCY_FILE, SUMMARY_FILE = "cell.json", "error.json", "latency.json", "summary.json"
RUN_LOCK = ".lock"  # the engine's lock of a run directory (pruning.loop.rundir.LOCK_FILE): not progress
_OLD_LATENCY_FILE = "bench.json"  # its name in older results folders
STATES = ("done", "partial", "failed", "pending")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to rerun that cell") from None


def latency_file(run_dir: str | Path) -> Path | None:
    """The run's latency record (``latency.json``, or ``bench.json`` as older versions named it), None if absent."""
    for name in (LATENCY_FILE, _OLD_LATENCY_FILE):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def cell_state(run_dir: str | Path) -> str:
    """``done`` | ``failed`` | ``partial`` | ``pending`` (see the module docstring)."""
    d = Path(run_dir)
    if (d / SUMMARY_FILE).is_file():
        return "done"
    if (d / ERROR_FILE).is_file():
        return "failed"
    if d.is_dir() and any(p.name not in (CELL_FILE, RUN_LOCK) for p in d.iterdir()):
        return "partial"
    return "pending"


def read_events(run_dir: str | Path) -> list[dict]:
    """The run's ``events.jsonl`` as a list (empty when missing)."""
    p = Path(run_dir) / "events.jsonl"
    if not p.is_file():
        return []
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{p}:{i + 1} is not valid JSON; the run directory is damaged") from None
    return out


def _top1(acc) -> float | None:
    return None if acc is None else float(acc["top1"])


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def read_run(run_dir: str | Path) -> dict:
    """One flat row for the run in ``run_dir`` (any state).  Definitions in the module docstring."""
    # long: one flat dict of every leaderboard field, in the order of the module docstring's definitions
    d = Path(run_dir)
    state = cell_state(d)
    cell = _read_json(d / CELL_FILE) if (d / CELL_FILE).is_file() else {}
    if cell.get("task") == "detection":
        from .detection.results import read_detection_run
        return read_detection_run(d, cell, state, _read_json)
    loop = cell.get("loop", {})
    c = cell.get("cell", {})
    row = {
        "id": cell.get("id", d.name), "hash": cell.get("hash"), "state": state,
        "model": c.get("model"), "class_set": c.get("class_set"), "kind": c.get("kind"),
        "init": c.get("init"), "head": c.get("head"),
        "score_data": c.get("score_data"), "score_head": c.get("score_head"),
        "criterion": loop.get("criterion"), "ratio": loop.get("ratio"), "seed": loop.get("seed"),
        "code_version": cell.get("code_version"), "class_sha256": cell.get("class_sha256"),
        "class_set_name": cell.get("class_set_name"), "device": cell.get("device"), "error": None,
        "weights": weights_label(cell.get("weights")) if "weights" in cell else None,
        "loop": loop,  # the cell's loop options as in its identity (defaults left out)
    }
    if state == "failed":
        err = _read_json(d / ERROR_FILE)
        row["error"] = f"{err.get('type')}: {err.get('message')}"
    if state != "done":
        return row
    s = _read_json(d / SUMMARY_FILE)
    base = s["baseline"]
    steps = s.get("steps", [])
    final = s.get("final", {})
    test = s.get("test")
    metric = test if test is not None else final.get("val")
    found = latency_file(d)
    bench = _read_json(found) if found is not None else {}
    cost = s["cost"]
    p_base = int(bench.get("params_full", base["params"]))  # scratch/reduced: the unreduced network
    m_base = int(bench.get("macs_full", base["macs"]))
    images = s.get("images", {})
    row.update({
        "device": s.get("device", row["device"]), "run_hash": s.get("run_hash"),
        "config_hash": s.get("config_hash"), "world_size": s.get("world_size", 1),
        "metric_split": "test" if test is not None else "val",
        "top1": _top1(metric), "top5": None if metric is None else float(metric["top5"]),
        "val_top1": _top1(final.get("val")), "baseline_top1": _top1(base["val"]),
        "after_steps_top1": _top1(s.get("after_steps", {}).get("val")),
        "params": int(cost["params"]), "macs": int(cost["macs"]),
        "params_base": p_base, "macs_base": m_base,
        "params_reduction": 1.0 - int(cost["params"]) / p_base, "macs_reduction": 1.0 - int(cost["macs"]) / m_base,
        "speedup": bench.get("speedup"), "latency_ms": bench.get("pruned_ms"),
        "latency_base_ms": bench.get("unpruned_ms"),
        "damage": _mean([st.get("damage") for st in steps]),
        "damage_max": max((st["damage"] for st in steps if st.get("damage") is not None), default=None),
        "recovery": _mean([st.get("recovered") for st in steps]),
        "epochs_to_recover": final.get("epochs_to_peak"), "epochs_to_baseline": final.get("epochs_to_baseline"),
        "epochs_to_recover_note": final.get("epochs_to_peak_note"),
        "params_target": bench.get("params_target"), "params_matched": bench.get("params_matched"),
        "reduced_ratio": bench.get("reduced_ratio"),
        "images_finetune": images.get("finetune_total"), "images_scoring": images.get("scoring"),
        "train_images_per_epoch": images.get("train_images_per_epoch"),
        "data_fraction": s.get("config", {}).get("data_fraction", loop.get("data_fraction")),
        "steps": [{"layer": st.get("layer"), "before": _top1(st.get("acc_before")),
                   "damage": _top1(st.get("acc_damage")), "recovery": _top1(st.get("acc_recovery")),
                   "macs": st.get("macs"), "params": st.get("params")} for st in steps],
        "epochs": [{"epoch": float(e["epoch"]), "top1": _top1(e["val"]), "top5": float(e["val"]["top5"]),
                    "images_total": e.get("images_total")} for e in final.get("epochs", [])],
    })
    return row


def scan(results_dir: str | Path, cell_ids=None) -> list[dict]:
    """Rows for every run directory (one holding ``cell.json``) under ``results_dir``, sorted by id; with
    ``cell_ids``, only the run directories of those cells are read (a run directory is named by its id)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} not found; run `imagenet52p-bench run CONFIG --out {root}`")
    keep = None if cell_ids is None else set(cell_ids)
    rows = [_read_checked(p.parent) for p in sorted(root.glob(f"*/{CELL_FILE}"))
            if keep is None or p.parent.name in keep]
    return sorted(rows, key=lambda r: r["id"])


def _read_checked(run_dir: Path) -> dict:
    """:func:`read_run`, a malformed record (a key missing, a value of the wrong type) named by its folder."""
    try:
        return read_run(run_dir)
    except (KeyError, TypeError, AttributeError) as e:
        what = f"has no key {e}" if isinstance(e, KeyError) else f"has a value of the wrong type ({e})"
        raise ValueError(f"the run directory {run_dir} is damaged: one of its JSON records {what}; "
                         f"delete {run_dir} to rerun that cell") from None
