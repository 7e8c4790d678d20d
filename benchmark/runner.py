"""The runner: every not-yet-complete cell of this task's share of the grid, one after another.

For each cell of ``partition(expand_grid(cfg), task_index, num_tasks)`` (run directory
``RESULTS/<cell id>``):

* ``done``: skipped.
* ``partial`` (interrupted): continued from its last checkpoint with ``resume=True``; without
  it the directory is cleared and the cell starts over (logged).
* ``failed``: retried; the previous ``error.json`` is kept as ``error.<attempt>.json``.
* ``pending``: started.

A cell that raises (out of memory, a missing build, a bad option...) gets an ``error.json``
(type, message, traceback) and the runner goes on with the next cell; the exit status of
:func:`run_grid`'s CLI is 1 when any cell failed.  With ``nproc_per_node > 1`` each cell runs
under ``torchrun --standalone`` (``python -m benchmark.cellmain``) and a non-zero exit is
recorded the same way.

``RESULTS/experiment.json`` records the config (name, description, reference tables, source
and its parsed content) for the leaderboard.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from .config import ExperimentConfig
from .execute import CellEnv, _classes, execute_cell, prepare_cell
from .grid import Cell, expand_grid, partition
from .results import BENCH_FILE, CELL_FILE, ERROR_FILE, cell_state, write_json

log = logging.getLogger(__name__)
EXPERIMENT_FILE = "experiment.json"


def code_version() -> str:
    """``<package version>+g<commit>`` (``.dirty`` when package files differ from the commit), or
    the bare version outside a git checkout."""
    from imagenet52p import __version__

    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "imagenet52p",
                                "pruning", "benchmark"], cwd=here, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    if not commit:
        return __version__
    return f"{__version__}+g{commit[:10]}" + (".dirty" if dirty else "")


def read_experiment(out: str | Path) -> dict:
    """``out/experiment.json`` (the config a results folder belongs to), ``{}`` when there is none."""
    path = Path(out) / EXPERIMENT_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a readable experiment record; remove it or use another --out")
    return doc


def write_experiment(cfg: ExperimentConfig, out: Path) -> None:
    """Record the config in ``out/experiment.json``; refuse a folder that holds another config's results
    (their experiment record, and so the leaderboard's title and reference tables, would be lost)."""
    path = out / EXPERIMENT_FILE
    if path.is_file():
        old = read_experiment(out).get("name")
        if old != cfg.name:
            raise ValueError(f"{out} holds the results of config {old!r} ({path}); config {cfg.name!r} would mix "
                             f"its cells into them: give it its own --out (e.g. results/{cfg.name})")
    doc = {"name": cfg.name, "description": cfg.description, "reference": list(cfg.reference),
           "source": cfg.source, "cells": len(expand_grid(cfg))}
    write_json(out / EXPERIMENT_FILE, doc)


def _provenance(cfg: ExperimentConfig, cell: Cell, env: CellEnv, version: str) -> dict:
    doc = cell.to_dict()
    doc.update({"code_version": version, "device": env.device or "auto", "class_sha256": None,
                "class_set_name": None, "experiment": cfg.name})
    try:
        cs = _classes(cfg.build_path(cell.class_set, env.data_root, env.data))
        doc["class_sha256"], doc["class_set_name"] = cs.sha256, cs.name
    except (FileNotFoundError, ValueError):
        pass  # the run itself will fail with the full message
    return doc


def _record_failure(run_dir: Path, exc_type: str, message: str, tb: str) -> None:
    attempt = 1 + len(list(run_dir.glob("error.*.json")))
    write_json(run_dir / ERROR_FILE, {"type": exc_type, "message": message, "traceback": tb,
                                       "attempt": attempt,
                                       "time": datetime.datetime.now(datetime.timezone.utc).isoformat()})


def _run_torchrun(cfg_path: str, cell: Cell, env: CellEnv, nproc: int) -> None:
    if cfg_path.startswith("benchmark/configs/") and not Path(cfg_path).is_file():
        cfg_path = Path(cfg_path).stem  # a shipped config, loaded by name
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "benchmark.cellmain", cfg_path, cell.id, "--env", json.dumps(dataclasses.asdict(env))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-4000:]
        raise RuntimeError(f"torchrun exited with status {proc.returncode}; last output:\n{tail}")


def run_one(cfg: ExperimentConfig, cell: Cell, env: CellEnv, resume: bool, version: str,
            nproc_per_node: int = 1) -> str:
    """Run one cell with failure recording; returns its state afterwards."""
    run_dir = Path(env.results_dir) / cell.id
    state = cell_state(run_dir)
    if state == "done" and (run_dir / BENCH_FILE).is_file():
        return state  # (a done run without bench.json, killed in between, gets its latency measured)
    if state == "partial" and not resume:
        log.warning("%s holds an interrupted run; starting it over (pass --resume to continue it)", run_dir)
        shutil.rmtree(run_dir)
    if state == "failed":
        n = 1 + len(list(run_dir.glob("error.*.json")))
        os.replace(run_dir / ERROR_FILE, run_dir / f"error.{n}.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    if state != "done":
        write_json(run_dir / CELL_FILE, _provenance(cfg, cell, env, version))
    try:
        if nproc_per_node > 1:
            prepare_cell(cfg, cell, env)
            _run_torchrun(cfg.source, cell, env, nproc_per_node)
        else:
            execute_cell(cfg, cell, run_dir, env)
    except Exception as e:  # noqa: BLE001 - every failure is recorded in the cell's row
        log.error("cell %s failed: %s: %s", cell.id, type(e).__name__, e)
        _record_failure(run_dir, type(e).__name__, str(e), traceback.format_exc())
        _free_memory()
    return cell_state(run_dir)


def _free_memory() -> None:
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_grid(cfg: ExperimentConfig, env: CellEnv, task_index: int = 0, num_tasks: int = 1, resume: bool = False,
             nproc_per_node: int = 1) -> dict[str, int]:
    """Run this task's cells (module docstring); returns ``{state: count}`` over them afterwards."""
    from tqdm.auto import tqdm

    out = Path(env.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_experiment(cfg, out)
    cells = partition(expand_grid(cfg), task_index, num_tasks)
    version = code_version()
    counts = {"done": 0, "failed": 0, "partial": 0, "pending": 0}
    log.info("task %d/%d: %d cells of %s -> %s", task_index, num_tasks, len(cells), cfg.name, out)
    for cell in tqdm(cells, desc=f"{cfg.name} cells", unit="cell", disable=not env.progress):
        state = run_one(cfg, cell, env, resume, version, nproc_per_node)
        counts[state] += 1
    return counts


def grid_states(cfg: ExperimentConfig, results_dir: str | Path, num_tasks: int = 1) -> list[dict]:
    """Every cell with its state and the task that owns it (for ``list``)."""
    cells = expand_grid(cfg)
    partition(cells, 0, num_tasks)  # validates num_tasks
    owner = {c.id: t for t in range(num_tasks) for c in partition(cells, t, num_tasks)}
    return [{"id": c.id, "kind": c.kind, "model": c.model, "class_set": c.class_set, "criterion": c.criterion,
             "ratio": c.ratio, "seed": c.seed, "task": owner[c.id],
             "state": cell_state(Path(results_dir) / c.id)} for c in cells]
