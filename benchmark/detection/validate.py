"""What can be checked about detection cells before any runs (``run`` refuses up front, ``list`` shows
``invalid``): the VOC root and its set lists, the architecture, and for a plug-in cell its upstream cell (done,
with a final model).  A direct cell's source is a plug-in cell of the same grid, run before it."""

from __future__ import annotations

from .execute import DetResolved
from .upstream import upstream_model_dir


def _voc_problem(rc: DetResolved) -> str | None:
    from .execute import voc_images

    try:
        for key in ("train", "test"):
            voc_images(rc.voc_root, rc.cfg.voc_option(key))
    except (FileNotFoundError, ValueError) as e:
        return f"VOC data not usable ([voc] root, --data voc=PATH or --data-root): {e}"
    return None


def detection_problems(cfg, cells, env) -> dict[str, list[str]]:
    """``{cell id: [problem, ...]}`` for the detection cells that cannot run."""
    from pruning.loop import list_models

    out: dict[str, list[str]] = {}
    if not cells:
        return out
    known = set(list_models())
    voc = _voc_problem(DetResolved(cfg, cells[0], env))  # the VOC root is the config's and the machine's
    for cell in cells:
        found = []
        if cell.model not in known:
            found.append(f"unknown model {cell.model!r} in [detector] arch")
        rc = DetResolved(cfg, cell, env)
        if voc:
            found.append(voc)
        if cell.kind == "plugin":
            try:
                upstream_model_dir(cfg, cell.upstream, cell.up_id, rc.upstream_results)
            except ValueError as e:
                found.append(str(e))
        if found:
            out[cell.id] = found
    return out
