"""``imagenet52p-bench clean CONFIG --out RESULTS [--stale] [--dry-run]``: what may be removed from a results folder.

* the ``failed`` cells of CONFIG's grid (``error.json``, no ``summary.json``) and its ``partial`` ones (an
  interrupted run that ``run`` would otherwise refuse without ``--resume``);
* with ``stale``: run directories (folders holding ``cell.json``), not done, that belong to no grid recorded in
  ``RESULTS/experiments/`` (:func:`benchmark.runner.read_experiments`; a folder may hold several configs, and
  the cells of every recorded config are kept).  A folder with no record at all has no stale cells.

``done`` cells and cells another process is running (:mod:`benchmark.locks`) are never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import ExperimentConfig
from .grid import expand_grid
from .locks import cell_lock, holder
from .results import CELL_FILE, cell_state


def to_clean(cfg: ExperimentConfig, out: Path, stale: bool = False) -> list[tuple[Path, str]]:
    """``[(run directory, what it is)]`` that :func:`clean` removes, in id order."""
    from .runner import read_experiments

    found = []
    for cell in expand_grid(cfg):
        d = out / cell.id
        state = cell_state(d)
        if state in ("failed", "partial") and holder(out, cell.id) is None:
            why = "failed (error.json, no summary)" if state == "failed" else "partial (an interrupted run)"
            found.append((d, why))
    if stale:
        records = read_experiments(out)
        known = {i for rec in records.values() for i in rec.get("cell_ids") or ()}
        legacy = any(rec.get("cell_ids") is None for rec in records.values())  # covers every cell there
        if records and not legacy:
            for p in sorted(out.glob(f"*/{CELL_FILE}")):
                d = p.parent
                state = cell_state(d)
                if d.name not in known and state != "done" and d not in {f for f, _ in found} \
                        and holder(out, d.name) is None:
                    found.append((d, f"stale ({state}; in no grid recorded in {out / 'experiments'})"))
    return found


def clean(cfg: ExperimentConfig, out: Path, stale: bool = False, dry_run: bool = False) -> list[tuple[Path, str]]:
    """Remove (unless ``dry_run``) what :func:`to_clean` lists; returns it."""
    if not out.is_dir():
        raise FileNotFoundError(f"results folder {out} not found")
    found = to_clean(cfg, out, stale)
    if dry_run:
        return found
    removed = []
    for d, why in found:
        with cell_lock(out, d.name) as pid:  # held while deleting: a `run` cannot start the cell in between
            if pid is None and cell_state(d) != "done":  # (nor has one finished it since it was listed)
                shutil.rmtree(d)
                removed.append((d, why))
    return removed
