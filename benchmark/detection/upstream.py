"""Upstream classification cells: the backbones that ``plugin`` cells plug into Faster R-CNN.

A plug-in cell names its upstream cell by its fields: the upstream config (``[upstream.NAME] config``), and
the grid's ``criterion``, ``ratio`` and ``seed`` plus any selector keys (a field of the upstream
:class:`benchmark.grid.Cell` such as ``class_set`` or ``head``, or one of its loop options).  The upstream
config's grid is expanded (its cell ids are machine-independent), exactly one ``prune`` cell must match
(ratio 0: its unpruned baseline), and its hash enters the plug-in cell's identity.  At run time the cell's
run directory ``<upstream results>/<cell id>`` must be done (``summary.json``) and hold its final model in
``model/`` (``pruning.save_pruned``); anything else is an error naming the cell and the command that runs it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..config import CELL_FIELDS, load_config
from ..grid import Cell, expand_grid


@functools.lru_cache(maxsize=None)
def _load(spec: str):
    cfg = load_config(spec)
    return cfg, tuple(expand_grid(cfg))


def upstream_config(cfg, name: str):
    """The :class:`benchmark.config.ExperimentConfig` of upstream ``name`` (a classification config)."""
    spec = str(cfg.upstream[name]["config"])
    try:
        up, _ = _load(spec)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{cfg.source}: [upstream.{name}] config = {spec!r}: {e}") from None
    if getattr(up, "task", "classification") != "classification":
        raise ValueError(f"{cfg.source}: [upstream.{name}] config = {spec!r} is a {up.task} config; an upstream "
                         "must be a classification config (its cells' final models are the backbones)")
    return up


def _matches(cell: Cell, selectors: dict) -> bool:
    for k, v in selectors.items():
        got = getattr(cell, k) if k in CELL_FIELDS else cell.loop_dict.get(k, object())
        if isinstance(got, tuple):
            got = list(got)
        if got != v:
            return False
    return True


def find_upstream(cfg, name: str, criterion: str | None, ratio: float, seed: int, selectors: dict,
                  where: str) -> Cell:
    """The one ``prune`` cell of upstream ``name`` with these fields (module docstring)."""
    up = upstream_config(cfg, name)
    cells = _load(str(cfg.upstream[name]["config"]))[1]
    found = [c for c in cells if c.kind == "prune" and c.criterion == criterion and c.ratio == float(ratio)
             and c.seed == int(seed) and _matches(c, selectors)]
    what = f"criterion={criterion or 'none'} ratio={ratio:g} seed={seed}" + \
        "".join(f" {k}={v!r}" for k, v in sorted(selectors.items()))
    if not found:
        crits = sorted({c.criterion or "none" for c in cells if c.kind == "prune"})
        raise ValueError(f"{cfg.source}: {where}: upstream {name!r} ({up.source}) has no prune cell with {what}; "
                         f"its criteria: {', '.join(crits)}; ratios: "
                         f"{', '.join(sorted({f'{c.ratio:g}' for c in cells}))}; seeds: "
                         f"{', '.join(sorted({str(c.seed) for c in cells}))}")
    if len(found) > 1:
        differ = sorted({k for k in CELL_FIELDS if len({getattr(c, k) for c in found}) > 1}
                        | {k for k in found[0].loop_dict if len({repr(c.loop_dict.get(k)) for c in found}) > 1})
        raise ValueError(f"{cfg.source}: {where}: {len(found)} cells of upstream {name!r} match {what} "
                         f"({', '.join(c.id for c in found[:4])}); add a selector key to the [[grid]] table to "
                         f"choose one (they differ in: {', '.join(differ)})")
    return found[0]


def upstream_model_dir(cfg, name: str, up_id: str, results: Path) -> Path:
    """``<results>/<up_id>/model`` of a done upstream cell, else a ValueError naming the cell and what to run."""
    from ..results import cell_state

    run_dir = Path(results) / up_id
    state = cell_state(run_dir)
    up = upstream_config(cfg, name)
    if state != "done":
        raise ValueError(f"upstream cell {up_id} of {up.source} is {state} in {results} (no {run_dir / 'summary.json'}); "
                         f"run it first: `imagenet52p-bench run {up.source} --out {results}`, or point "
                         f"--upstream {name}=PATH at the results folder that holds it")
    model = run_dir / "model"
    if not (model / "plan.json").is_file():
        raise ValueError(f"upstream cell {up_id} in {results} is done but has no final model ({model / 'plan.json'} "
                         "missing); it was written by an older version or damaged: rerun it "
                         f"(`imagenet52p-bench clean {up.source} --out {results}` does not remove done cells: delete "
                         f"{run_dir} and run `imagenet52p-bench run {up.source} --out {results}`)")
    return model
