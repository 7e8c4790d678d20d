"""Reading a detection run directory into a leaderboard row (the detection part of :mod:`benchmark.results`).

A detection cell's run directory holds ``cell.json`` (identity and provenance), ``train/`` (plug-in: the
trainer's run directory, ``pruning.detection.train``) or ``prune/`` (direct: ``pruning.detection.prune``),
``summary.json`` (written when the test evaluation is done: the cell is done) and ``latency.json`` (the speed
record of :func:`benchmark.detection.execute.measure_speed`).

Row definitions (mAP and AP as fractions in [0, 1], on ``[voc] test``, evaluated once on the selected detector):

``map07`` / ``map10``   mean over the classes with positives of the VOC07 11-point / VOC2010+ area AP
``fps`` / ``fps_base``  images/s at batch 1 over the whole pipeline (median), of this detector / of the unpruned
                        architecture timed interleaved with it in the same run
``fps_speedup``         ``fps / fps_base`` (= the unpruned median ms / this detector's median ms)
``gflops`` / ``gflops_base``  GFLOPs (2 x MACs) at the fixed input and proposal count of ``pruning.detection.speed``
``gflops_reduction``    ``1 - gflops / gflops_base``;  ``predicted_speedup`` = ``gflops_base / gflops``
``speedup_vs_predicted``  ``fps_speedup / predicted_speedup`` (the paper's fps claim is about this ratio)
"""

from __future__ import annotations

from pathlib import Path


def _get(doc: dict, *keys):
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def _without_seed(opts: dict) -> dict:
    """``opts`` with ``seed`` dropped from its option groups (``train``, ``prune``)."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "seed"} if isinstance(v, dict) else v)
            for k, v in opts.items()}


def read_detection_run(d: Path, cell: dict, state: str, read_json) -> dict:
    """One flat row for the detection run in ``d`` (module docstring)."""
    c = cell.get("cell", {})
    opts = cell.get("options", {})
    crit = cell.get("criterion")
    row = {"id": cell.get("id", d.name), "hash": cell.get("hash"), "state": state, "task": "detection",
           "model": c.get("model"), "class_set": "voc", "kind": c.get("kind"), "init": "pretrained",
           "head": "detector", "score_data": None, "score_head": None, "criterion": crit, "ratio": cell.get("ratio"),
           "seed": cell.get("seed"), "code_version": cell.get("code_version"), "class_sha256": None,
           "class_set_name": None, "device": cell.get("device"), "error": None,
           "upstream": _get(c, "upstream", "config"), "upstream_cell": _get(c, "upstream", "cell"),
           "source_hash": c.get("source"),
           # the table a row belongs to: every option but criterion/ratio/seed (benchmark.leaderboard); a plug-in
           # cell's detector training holds its seed too, left out here so that seeds are averaged, not tabled
           "loop": {"upstream": _get(c, "upstream", "config"), **_without_seed(opts)}}
    if state == "failed":
        err = read_json(d / "error.json")
        row["error"] = f"{err.get('type')}: {err.get('message')}"
    if state != "done":
        return row
    s = read_json(d / "summary.json")
    speed = read_json(d / "latency.json") if (d / "latency.json").is_file() else {}
    test = s.get("test", {})
    models = _get(speed, "fps", "models") or {}
    fps, base_fps = _get(models, "pruned", "fps"), _get(models, "unpruned", "fps")
    gf, base_gf = _get(speed, "cost", "pruned", "gflops"), _get(speed, "cost", "unpruned", "gflops")
    params, base_params = _get(speed, "cost", "pruned", "params"), _get(speed, "cost", "unpruned", "params")
    row.update({
        "device": _get(speed, "fps", "device") or row["device"], "metric_split": "test",
        "map07": test.get("map07"), "map10": test.get("map10"), "ap07": test.get("ap07"), "ap10": test.get("ap10"),
        "fps": fps, "fps_base": base_fps, "fps_speedup": _get(speed, "speedup", "measured"),
        "gflops": gf, "gflops_base": base_gf, "gflops_reduction": _get(speed, "speedup", "gflops_reduction"),
        "predicted_speedup": _get(speed, "speedup", "predicted"),
        "params": params, "params_base": base_params,
        "params_reduction": 1 - params / base_params if params and base_params else None,
        "images_test": _get(s, "images", "test"), "images_train": _get(s, "images", "train"),
    })
    row["speedup_vs_predicted"] = _get(speed, "speedup", "efficiency")
    return row
