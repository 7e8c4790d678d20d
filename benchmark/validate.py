"""What can be checked about a grid's cells before any of them runs (``run`` refuses up front, ``list`` shows
``invalid``): the model name, the layer protocol or conv names for that model, the builds the cell reads,
the starting weights file.  Problems found only by running (a damaged shard, a classes.json that does not
match its manifest, out of memory) are still recorded per cell in ``error.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ExperimentConfig
from .grid import Cell
from .resolve import CellEnv, ResolvedCell, resolve_cell


def _model(name: str, cache: dict):
    from pruning.loop.models import make_model

    if name not in cache:
        cache[name] = make_model(name, 10)
    return cache[name]


def _model_layers(name: str, protocol: str, cache: dict):
    """``prunable_layers(make_model(name, 10), protocol)`` (list) or the error's text; each model built once,
    each (model, protocol) resolved once (a protocol's dependency graph is not rebuilt for every cell)."""
    import pruning

    key = (name, protocol)
    if key not in cache:
        try:
            cache[key] = pruning.prunable_layers(_model(name, cache), protocol)
        except ValueError as e:
            cache[key] = str(e)
    return cache[key]


def _layer_problem(cell: Cell, cache: dict) -> str | None:
    from torch import nn

    layers = cell.loop_config.layers
    if cell.ratio == 0 and cell.kind == "prune":
        return None  # the unpruned baseline removes nothing
    if isinstance(layers, str):
        got = _model_layers(cell.model, layers, cache)
        return got if isinstance(got, str) else None
    modules = dict(_model(cell.model, cache).named_modules())  # any Conv2d, as the engine and apply_plan take
    bad = [n for n in layers if not isinstance(modules.get(n), nn.Conv2d)]
    if bad:
        return (f"layers {bad} are not convs of {cell.model}; see `imagenet52p layers {cell.model}` for its "
                "prunable convs")
    return None


def _build_problem(rc: ResolvedCell, class_set: str) -> str | None:
    try:
        build = rc.build_of(class_set)
    except ValueError as e:
        return str(e)
    from imagenet52p.format import load_manifest  # the one reader: presence, resumable builds, shape

    try:
        load_manifest(build)
    except (FileNotFoundError, ValueError) as e:
        return f"build of class set {class_set!r} not found or not usable (set [data] {class_set}, " \
               f"--data {class_set}=PATH or --data-root): {e}"
    return None


def _weights_problem(rc: ResolvedCell, cache: dict) -> str | None:
    if rc.cell.kind != "prune" or rc.cell.init == "scratch":
        return None  # scratch/reduced cells and runner-trained starting models read no weights file
    try:
        w = rc.weights
    except ValueError as e:
        return str(e)
    if w in (None, "pretrain"):
        return None
    from pruning.weights import is_weight_name

    if is_weight_name(rc.cell.model, w):  # a weight name: found in (or fetched into) its cache now, not hours later
        key = ("weights", rc.cell.model, w)  # once per grid, not once per cell
        if key not in cache:
            try:
                rc.weights_source
                cache[key] = None
            except (OSError, ValueError) as e:
                cache[key] = str(e)
        return cache[key]
    if not Path(w).is_file():
        return f"weights file {w} not found ([model].weights or --weights)"
    if not os.access(w, os.R_OK):
        return f"weights file {w} is not readable"
    return None


def cell_problems(cfg: ExperimentConfig, cell: Cell, env: CellEnv, cache: dict) -> list[str]:
    """Every problem of ``cell`` that can be found without running it (empty when none)."""
    from pruning.loop.models import model_known

    unknown = model_known(cell.model)
    if unknown:
        return [("unknown" + unknown[2:]) if unknown.startswith("no model") else unknown]
    rc = resolve_cell(cfg, cell, env)
    sets = [cell.class_set] + (["full"] if "full" in cfg.data and cell.class_set != "full" else [])
    found = [_layer_problem(cell, cache), *(_build_problem(rc, s) for s in sets), _weights_problem(rc, cache)]
    return [p for p in found if p]


def grid_problems(cfg: ExperimentConfig, cells: list[Cell], env: CellEnv) -> dict[str, list[str]]:
    """``{cell id: [problem, ...]}`` for the cells that cannot run (see :func:`cell_problems`; detection cells:
    :func:`benchmark.detection.validate.detection_problems`)."""
    if cfg.task == "detection":
        from .detection.validate import detection_problems
        return detection_problems(cfg, cells, env)
    cache: dict = {}
    out = {}
    for cell in cells:
        found = cell_problems(cfg, cell, env, cache)
        if found:
            out[cell.id] = found
    return out


def refuse_invalid(cfg: ExperimentConfig, cells: list[Cell], env: CellEnv) -> None:
    """One ValueError listing every problem, grouped by cause (each with the cells it affects)."""
    problems = grid_problems(cfg, cells, env)
    if not problems:
        return
    by_cause: dict[str, list[str]] = {}
    for cid, found in problems.items():
        for p in found:
            by_cause.setdefault(p, []).append(cid)
    lines = [f"{cfg.source}: {len(problems)} of {len(cells)} cells cannot run; nothing was run or written:"]
    for cause, ids in by_cause.items():
        more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
        lines.append(f"  - {cause} (cells: {', '.join(ids[:3])}{more})")
    raise ValueError("\n".join(lines))
