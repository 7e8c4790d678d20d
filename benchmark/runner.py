"""The runner: every not-yet-complete cell of this task's share of the grid, one after another.

For each cell of ``partition(expand_grid(cfg), task_index, num_tasks)`` (run directory
``RESULTS/<cell id>``):

* ``done``: skipped.
* ``partial`` (interrupted): continued from its last checkpoint with ``resume=True``; without it
  :func:`run_grid` refuses before any work, listing the partial cells (as ``imagenet52p prune`` refuses a
  half-finished run directory): pass ``--resume`` to continue them, or ``clean`` them to discard them.
  Nothing is ever deleted by ``run``.
* held by another process (its lock ``RESULTS/<cell id>.lock``, :mod:`benchmark.locks`): skipped, counted
  ``running`` (the holder's pid is logged).
* ``failed``: retried; the previous ``error.json`` is kept as ``error.<attempt>.json``.
* ``pending``: started.

Before any cell runs, every cell is validated (:mod:`benchmark.validate`: model, layers, builds,
weights): one error lists every problem and nothing is written.  A cell that raises (out of memory, a missing build, a bad option...) gets an ``error.json``
(type, message, traceback) and the runner goes on with the next cell; the exit status of
:func:`run_grid`'s CLI is 1 when any cell failed.  With ``nproc_per_node > 1`` each cell runs
under ``torchrun --standalone`` (``python -m benchmark.cellmain``) and a non-zero exit is
recorded the same way.

One results folder may hold several configs (cells are identified by the hash of their resolved
configuration, so cells that two configs share are computed once): ``RESULTS/experiments/<name>.json``
records each config (:func:`write_experiment`: name, description, reference tables, source and the
ids of every cell of its grid), and the leaderboard shows one config's cells
(:func:`select_experiment`).  A single-record ``RESULTS/experiment.json`` written by earlier versions
is still read as one record (all the folder's cells); the next ``run`` of any config moves it into
``experiments/``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

from .config import ExperimentConfig
from .execute import execute_cell, prepare_cell
from .grid import NO_CRITERION, Cell, expand_grid, partition
from .locks import cell_lock, exclusive, holder
from .resolve import CellEnv, ResolvedCell, resolve_cell
from pruning.loop.rundir import code_version, write_json_atomic

from .results import CELL_FILE, ERROR_FILE, cell_state, latency_file

log = logging.getLogger(__name__)
EXPERIMENT_FILE = "experiment.json"  # the single record of earlier versions (read, then migrated)
EXPERIMENTS_DIR = "experiments"  # RESULTS/experiments/<name>.json: one record per config


def _load_record(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ValueError(f"{path} is not a readable experiment record; remove it or use another --out")
    return doc


def record_path(out: str | Path, name: str) -> Path:
    """``out/experiments/<name>.json``; a name that is not a plain file name (``/``, spaces...) gets its
    other characters replaced by ``_`` and 8 hex digits of its sha256 appended, so names never collide."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe != name or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return Path(out) / EXPERIMENTS_DIR / f"{safe}.json"


def read_experiments(out: str | Path) -> dict[str, dict]:
    """Every config recorded in the results folder ``out``: ``{name: record}`` (empty when none).  A record
    is ``name``, ``description``, ``reference``, ``source``, ``cells`` (count) and ``cell_ids`` (the ids of
    its grid); a legacy ``out/experiment.json`` (single record, no ``cell_ids``: the folder held that config
    only) is one record, unless ``experiments/`` has that name too."""
    out = Path(out)
    records: dict[str, dict] = {}
    folder = out / EXPERIMENTS_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            rec = _load_record(path)
            records[rec["name"]] = rec
    legacy = out / EXPERIMENT_FILE
    if legacy.is_file():
        rec = _load_record(legacy)
        records.setdefault(rec["name"], rec)
    return records


def select_experiment(out: str | Path, name: str | None = None) -> dict:
    """The record the leaderboard of ``out`` is for: config ``name``; with no name, the only record
    (``{}`` when the folder has none: then every cell is shown).  Several records and no name, or a name
    that is not recorded, raise ValueError listing the recorded names."""
    records = read_experiments(out)
    names = ", ".join(sorted(records)) or "none"
    if name is not None:
        if name not in records:
            raise ValueError(f"{out} has no record of config {name!r} (recorded: {names}); "
                             f"`imagenet52p-bench run {name} --out {out}` records it")
        return records[name]
    if len(records) > 1:
        raise ValueError(f"{out} holds the cells of {len(records)} configs ({names}); pass --config NAME to "
                         f"choose whose leaderboard to show (each has its own title, grid and reference tables)")
    return next(iter(records.values()), {})


def _records_lock(out: Path):
    """Exclusive ``flock`` on ``out/experiments/.lock``: concurrent array tasks (of one config or several)
    read-check-write the records one at a time."""
    return exclusive(out / EXPERIMENTS_DIR / ".lock")


def _migrate_legacy(out: Path, name: str) -> None:
    """Move a single-record ``experiment.json`` of earlier versions into ``experiments/``.  That folder held
    its config only (earlier versions refused a second one), so the record's cells are the run directories
    there now; the record of ``name`` itself is rewritten by the caller from its grid."""
    legacy = out / EXPERIMENT_FILE
    if not legacy.is_file():
        return
    rec = _load_record(legacy)
    if rec["name"] != name and not record_path(out, rec["name"]).is_file():
        ids = sorted(p.parent.name for p in out.glob(f"*/{CELL_FILE}"))
        write_json_atomic(record_path(out, rec["name"]), {**rec, "cells": len(ids), "cell_ids": ids,
                                                   "migrated_from": EXPERIMENT_FILE})
    legacy.unlink()


def check_record(cfg: ExperimentConfig, out: Path, ids: list[str]) -> None:
    """Refuse a record of ``cfg``'s name in ``out`` that lists another grid (read only; see
    :func:`write_experiment`)."""
    path = record_path(out, cfg.name)
    if not path.is_file():
        return
    old = _load_record(path)
    old_ids = old.get("cell_ids")
    if old["name"] == cfg.name and old_ids is not None and sorted(old_ids) != ids:
        gone, new = sorted(set(old_ids) - set(ids)), sorted(set(ids) - set(old_ids))
        eg_gone = f" (e.g. {gone[0]})" if gone else ""
        eg_new = f" (e.g. {new[0]})" if new else ""
        raise ValueError(
            f"{path} records config {cfg.name!r} with another grid: {len(gone)} of its {len(old_ids)} "
            f"cells are not in {cfg.source}{eg_gone} and {len(new)} of the {len(ids)} cells of "
            f"{cfg.source} are not in it{eg_new}. One name is one grid per results folder: rename the "
            f"config, use another --out, or delete {path} if the recorded grid is obsolete (finished "
            f"cells stay and are reused where ids match)")


def write_experiment(cfg: ExperimentConfig, out: Path, cells: list[Cell] | None = None) -> None:
    """Record the config in ``out/experiments/<name>.json`` (name, description, reference tables, source,
    the ids of its grid's cells), under a lock so that concurrent tasks never lose each other's records.
    A folder may hold any number of configs; a record of the same name with a different grid is refused
    (naming the file and the cells that differ): a name is cited as one table, whose leaderboard would
    mix both grids."""
    out = Path(out)
    ids = sorted(c.id for c in (expand_grid(cfg) if cells is None else cells))
    doc = {"name": cfg.name, "description": cfg.description, "reference": list(cfg.reference),
           "source": cfg.source, "cells": len(ids), "cell_ids": ids}
    if cfg.task != "classification":
        doc["task"] = cfg.task
    path = record_path(out, cfg.name)
    with _records_lock(out):
        check_record(cfg, out, ids)
        _migrate_legacy(out, cfg.name)
        write_json_atomic(path, doc)


def _build_classes(rc: ResolvedCell) -> dict:
    """``{"class_sha256", "class_set_name", "full_class_sha256"}`` of the builds the cell reads now: its own
    and, for a subset cell, the ``full`` build (starting model, scoring data); None where not readable."""
    doc = {"class_sha256": None, "class_set_name": None, "full_class_sha256": None}
    try:
        doc["class_sha256"], doc["class_set_name"] = rc.classes.sha256, rc.classes.name
        if rc.cell.class_set != "full" and rc.full_classes is not None:
            doc["full_class_sha256"] = rc.full_classes.sha256
    except (FileNotFoundError, ValueError):
        pass  # the run itself will fail with the full message
    return doc


def check_builds_unchanged(cfg: ExperimentConfig, cells: list[Cell], env: CellEnv) -> None:
    """Refuse to reuse (skip or resume) a cell computed on other class lists than the builds now hold: a cell's
    id names its class sets, not their contents, so a results folder shared by configs whose ``[data]``
    point at different builds (a ``random52`` v1 and a v2 build, say) would otherwise mix them silently."""
    out = Path(env.results_dir)
    if cfg.task == "detection":
        return  # no class builds: a detection cell's identity holds its upstream cell's hash
    builds: dict[str, tuple] = {}  # class set -> (a resolved cell of it, what its builds hold now): read once
    weights: dict = {}  # (model, kind, init) -> the starting weights' identity now: each file hashed once
    for cell in cells:
        path = out / cell.id / CELL_FILE
        if cell_state(out / cell.id) not in ("done", "partial") or not path.is_file():
            continue
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        if cell.class_set not in builds:
            rc = resolve_cell(cfg, cell, env)
            builds[cell.class_set] = (rc, _build_classes(rc))
        rc, now = builds[cell.class_set]
        _check_weights_unchanged(out / cell.id, old, cell, lambda c=cell: resolve_cell(cfg, c, env), weights)
        for key in ("class_sha256", "full_class_sha256"):
            if old.get(key) and now[key] and old[key] != now[key]:
                which, build = (cell.class_set, rc.build) if key == "class_sha256" else ("full", rc.full_build)
                raise ValueError(f"{out / cell.id} was computed on another class list for {which!r} (sha256 "
                                 f"{old[key][:12]}) than the build {build} now holds ({now[key][:12]}); use "
                                 "another --out for these builds")


def _weights_identity(rc: ResolvedCell) -> dict | None:
    """:meth:`pruning.weights.WeightsSource.identity` of the cell's starting weights (kind, canonical name,
    file, sha256); None for random init or where they cannot be found (the run itself then fails with the
    full message)."""
    try:
        return rc.weights_source.identity()
    except (OSError, ValueError):
        return None


def _check_weights_unchanged(run_dir: Path, old: dict, cell: Cell, resolve, cache: dict) -> None:
    """A cell's id names its weights as the config writes them (a file path, a weight name), not their bytes:
    refuse to reuse a cell whose recorded starting weights (sha256) differ from those it would start from now
    (a replaced file, another --weights, a re-downloaded cache file)."""
    before = old.get("weights")
    if not isinstance(before, dict) or not before.get("sha256"):
        return
    key = (cell.model, cell.kind, cell.init)
    if key not in cache:
        rc = resolve()
        cache[key] = (_weights_identity(rc), rc)
    now, rc = cache[key]
    if now and now.get("sha256") and now["sha256"] != before["sha256"]:
        from pruning.weights import weights_label
        raise ValueError(f"{run_dir} was computed from other starting weights ({weights_label(before)}, sha256 "
                         f"{before['sha256'][:12]}) than the cell would start from now ({weights_label(now)}, "
                         f"{rc.weights_source.path}, sha256 {now['sha256'][:12]}); use another --out for these "
                         "weights, or restore the file the folder was computed from")


def _provenance(rc: ResolvedCell, version: str) -> dict:
    if rc.cfg.task == "detection":
        return rc.provenance(version)
    doc = rc.cell.to_dict()
    doc.update({"code_version": version, "device": rc.env.device or "auto", "experiment": rc.cfg.name,
                **_build_classes(rc), "weights": _weights_identity(rc)})
    return doc


def _record_failure(run_dir: Path, exc_type: str, message: str, tb: str) -> None:
    attempt = 1 + len(list(run_dir.glob("error.*.json")))
    write_json_atomic(run_dir / ERROR_FILE, {"type": exc_type, "message": message, "traceback": tb,
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
    """Run one cell under its lock, with failure recording; returns its state afterwards (``running`` when
    another process holds it)."""
    with cell_lock(env.results_dir, cell.id) as other:
        if other is not None:
            log.warning("cell %s is running in another process (pid %s); skipped", cell.id, other)
            return "running"
        return _run_locked(cfg, cell, env, resume, version, nproc_per_node)


def _run_locked(cfg, cell, env, resume, version, nproc_per_node) -> str:
    run_dir = Path(env.results_dir) / cell.id
    rc = resolve_cell(cfg, cell, env)  # builds, class lists, weights: resolved once for the whole cell
    state = cell_state(run_dir)
    if state == "done" and latency_file(run_dir) is not None:
        return state  # (a done run without its latency record, killed in between, gets it measured)
    if state == "partial" and not resume:  # interrupted since run_grid's check (another process was killed)
        log.warning("%s holds an interrupted run; left as it is (pass --resume to continue it)", run_dir)
        return state
    if state == "failed":
        n = 1 + len(list(run_dir.glob("error.*.json")))
        os.replace(run_dir / ERROR_FILE, run_dir / f"error.{n}.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    if state != "done":
        write_json_atomic(run_dir / CELL_FILE, _provenance(rc, version))
    try:
        if cfg.task == "detection":
            from .detection.execute import execute_detection_cell
            execute_detection_cell(cfg, cell, run_dir, env, rc)
        elif nproc_per_node > 1:
            prepare_cell(cfg, cell, env, rc)
            _run_torchrun(cfg.source, cell, env, nproc_per_node)
        else:
            execute_cell(cfg, cell, run_dir, env, rc)
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
    check_out(out)
    grid = expand_grid(cfg)  # once per run: the task's share and the config's record both come from it
    # plug-in cells run before the direct cells that prune their detectors (stable: id order otherwise)
    cells = sorted(partition(grid, task_index, num_tasks), key=lambda c: getattr(c, "order", 0))
    preflight(cfg, env, grid, cells, nproc_per_node, resume)
    write_experiment(cfg, out, grid)
    version = code_version()
    counts = {"done": 0, "failed": 0, "partial": 0, "pending": 0}
    log.info("task %d/%d: %d cells of %s -> %s", task_index, num_tasks, len(cells), cfg.name, out)
    for cell in tqdm(cells, desc=f"{cfg.name} cells", unit="cell", disable=not env.progress):
        state = run_one(cfg, cell, env, resume, version, nproc_per_node)
        counts[state] = counts.get(state, 0) + 1
    return counts


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a results folder (it is created)")


def preflight(cfg: ExperimentConfig, env: CellEnv, grid: list[Cell], cells: list[Cell], nproc_per_node: int = 1,
              resume: bool = True) -> None:
    """Every check before any work, for ``cells`` (a task's share for ``run``, the whole grid for ``submit``);
    raises ValueError naming the problem, and creates the results folder only when all pass."""
    from .validate import refuse_invalid

    out = Path(env.results_dir)
    check_out(out)
    if cfg.task == "detection" and nproc_per_node > 1:
        raise ValueError(f"{cfg.source}: --nproc-per-node {nproc_per_node}: detection cells train on one device "
                         "(docs/detection.md); spread a detection grid with --task-index/--num-tasks instead")
    check_record(cfg, out, sorted(c.id for c in grid))  # read only: before anything is written
    # done cells are not run again: a moved build or weights file of theirs is no reason to refuse the others
    refuse_invalid(cfg, [c for c in cells if cell_state(out / c.id) != "done"], env)
    if not resume:
        refuse_partial(cfg, cells, out)
    check_builds_unchanged(cfg, cells, env)
    for cell in cells if nproc_per_node > 1 else ():
        try:  # a global batch that does not split over the GPUs: refused before any work (pretraining included)
            cell.loop_config.micro_batch(nproc_per_node)
        except ValueError as e:
            raise ValueError(f"{cfg.source}: cell {cell.id} with --nproc-per-node {nproc_per_node}: {e}") from None
    make_results_dir(out)


def refuse_partial(cfg: ExperimentConfig, cells: list[Cell], out: Path) -> None:
    """Without ``--resume``, a partial cell (not held by a running process) stops the run before any work."""
    partial = [c.id for c in cells if cell_state(out / c.id) == "partial" and holder(out, c.id) is None]
    if partial:
        more = f" and {len(partial) - 5} more" if len(partial) > 5 else ""
        raise ValueError(f"{out} holds {len(partial)} interrupted cell(s) of {cfg.source}: "
                         f"{', '.join(str(out / p) for p in partial[:5])}{more}. Pass --resume to continue them "
                         f"from their last checkpoint, or `imagenet52p-bench clean {cfg.source} --out {out}` "
                         "to discard them")


def make_results_dir(out: Path) -> None:
    """Create the results folder, refusing a path that cannot be one (with the path and the reason)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out} cannot be used as a results folder: {e.strerror or e} "
                         f"({e.filename or out}); choose a writable folder") from None


def grid_states(cfg: ExperimentConfig, results_dir: str | Path, num_tasks: int = 1,
                env: CellEnv | None = None) -> list[dict]:
    """Every cell with its state and the task that owns it (for ``list``).  With ``env``, a cell that is not
    done and cannot run (:mod:`benchmark.validate`) is ``invalid``, its reasons under ``problems``."""
    from .validate import grid_problems

    cells = expand_grid(cfg)
    partition(cells, 0, num_tasks)  # validates num_tasks
    owner = {c.id: t for t in range(num_tasks) for c in partition(cells, t, num_tasks)}
    rows = [{"id": c.id, "kind": c.kind, "model": c.model, "class_set": c.class_set, "criterion": c.criterion or NO_CRITERION,
             "ratio": c.ratio, "seed": c.seed, "task": owner[c.id],
             "state": cell_state(Path(results_dir) / c.id)} for c in cells]
    if env is not None:
        problems = grid_problems(cfg, [c for c, r in zip(cells, rows) if r["state"] != "done"], env)
        for r in rows:
            if r["id"] in problems:
                r["state"], r["problems"] = "invalid", problems[r["id"]]
    return rows
