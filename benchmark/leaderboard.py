"""The leaderboard: run rows aggregated over seeds into tables shaped like the paper's.

A **table** is every cell sharing model, class set, kind, init, head and loop options
except ``criterion``, ``ratio`` and ``seed``; its rows are criteria, its columns pruning
ratios.  A criterion run with more than one scoring setting in a table (``score_data`` /
``score_head``, e.g. ``sensitivity`` on the full data and on the subset's) gets one row per
setting, named ``criterion [score_data/score_head]``; its runs are never averaged together.
The unpruned baseline (ratio 0) of a table is the baseline cell whose options,
ignoring the pruning-only ones, equal the table's (ignoring ``q`` too when the baseline was
evaluated without fine-tuning).

Each **entry** (table x criterion x ratio) aggregates the ``done`` runs of all its seeds:
for every metric, ``mean`` = arithmetic mean and ``std`` = sample standard deviation
(``ddof=1``; ``None`` with a single seed).  Failed runs are counted (``n_failed``) and
their errors listed, never averaged.  Provenance (config hashes, code versions, class-list
sha256, devices) is the sorted set over the entry's runs; ``top1_runs`` lists ``{seed, top1}`` of
its done runs (what the paired differences to ``random`` below are computed from).

The **overall ranking** compares criteria across every (table, ratio) **column** holding at
least two criteria with a measured mean top-1 (columns with one criterion are skipped).  In a
column of ``k`` criteria, ranks go by mean top-1 (1 = best; tied criteria share the mean of the
ranks they span) and are normalised to ``norm = (rank - 1) / (k - 1)`` in [0, 1] (0 = best,
1 = worst, whatever ``k``), so 4th of 7 (0.5) and 2nd of 3 (0.5) count the same and 2nd of 3 is
not mistaken for 2nd of 7.  Per criterion:

``norm_rank``      mean of its normalised ranks over the columns it appears in; the table is
                   ordered by it (then by name).  Raw ranks are kept per column in ``ranks``
                   (table, ratio, rank, k, norm) but never averaged: they do not compare
                   across columns of different size.
``columns``        the number of those columns; ``wins``: columns where it is best alone.
``beats_random`` / ``random_columns``  the number of columns where its mean top-1 is strictly
                   above ``random``'s, out of the columns both appear in (``None`` for random).
``vs_random``      the **paired** top-1 difference to ``random``: in every column where both have
                   done runs, runs are paired by seed (same table, ratio and seed) and
                   ``d = top1(c, seed) - top1(random, seed)``; ``vs_random`` is the mean of ``d``
                   over all pairs of all columns (each pair weighs the same), ``vs_random_std``
                   the sample std of those ``d`` (``ddof=1``; None for fewer than two pairs),
                   ``vs_random_n`` the number of pairs and ``vs_random_se`` = std / sqrt(n).
                   The pairs pool columns (tables, ratios) with seeds, so the std measures the
                   spread of the difference over both, and the standard error treats pairs as
                   independent.  A run whose seed has no partner (or whose seed occurs more than
                   once in its entry, which cannot be paired unambiguously) is left out and
                   counted in ``vs_random_unpaired`` (runs of either side).
``mean_top1`` / ``mean_damage``  plain means over its columns of the entry means.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

from .grid import NO_CRITERION, PRUNE_ONLY

METRICS = ("top1", "top5", "val_top1", "params_reduction", "macs_reduction", "speedup", "damage",
           "damage_max", "recovery", "epochs_to_recover", "epochs_to_baseline", "images_finetune",
           "images_scoring", "params", "macs", "latency_ms", "after_steps_top1", "params_target", "params_matched",
           "reduced_ratio")
#: Detection entries (benchmark.detection.results): mAP, fps and cost, instead of the classification metrics.
DET_METRICS = ("map07", "map10", "fps", "fps_base", "fps_speedup", "gflops", "gflops_base", "gflops_reduction",
               "predicted_speedup", "speedup_vs_predicted", "params", "params_reduction")
#: The metric a table's cells show and its criteria are ranked by, per cell kind (default ``top1``): detection
#: tables show and rank VOC07 11-point mAP, the metric of the paper's Tables 5-7.
PRIMARY = {"plugin": "map07", "direct": "map07"}
#: Detection entries' provenance besides PROVENANCE: the upstream classification cell of their backbone.
DET_PROVENANCE = ("upstream_cell",)
#: Cell kinds whose ratio-0 cells are a table's unpruned baseline.
BASELINE_KINDS = {"prune": "prune", "scratch": "prune", "reduced": "prune", "plugin": "plugin"}
#: Per-entry provenance: the sorted set over its runs.  ``weights``: the starting weights
#: (:func:`pruning.weights.weights_label`: ``VGG16_Weights.IMAGENET1K_V1``, ``file sha256:…``).  ``score_data`` / ``score_head``: what a data criterion
#: scored on and the classifier of its loss (``benchmark.config.SCORE_DATA`` / ``SCORE_HEADS``).
PROVENANCE = ("hash", "config_hash", "code_version", "class_sha256", "weights", "device", "score_data", "score_head")
_TABLE_EXCLUDE = ("criterion", "ratio", "seed", "id", "hash")


def mean_std(xs) -> tuple[float | None, float | None]:
    """``(mean, sample std with ddof=1)`` of the non-None values; std is None for fewer than two."""
    xs = [float(x) for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _table_key(row: dict, loop: dict, baseline: bool) -> str:
    keep = {k: v for k, v in loop.items() if k not in _TABLE_EXCLUDE and not (baseline and k in PRUNE_ONLY)}
    cell = {k: row[k] for k in ("model", "class_set", "kind", "init", "head")}
    return json.dumps({"cell": cell, "loop": keep}, sort_keys=True)


def _label(key: str, varying: set[str]) -> str:
    d = json.loads(key)
    kind = d["cell"]["kind"]
    parts = [d["cell"]["model"], d["cell"]["class_set"]]
    if kind in ("plugin", "direct"):  # detection (benchmark.detection)
        up = d["loop"].get("upstream")
        parts = [f"Faster R-CNN ({d['cell']['model']}) on VOC",
                 f"backbone from {up}" if kind == "plugin" else f"trained detector (backbone from {up}) pruned directly"]
        # the kind says how the tables differ; option groups (train, prune, ...) are dicts: not in a label
        varying = {k for k in varying - {"upstream", "init", "head"} if not isinstance(d["loop"].get(k), dict)}
    elif kind != "prune":
        parts.append(f"{kind} from scratch")
    for f in ("init", "head"):
        if f in varying:
            parts.append(f"{f}={d['cell'][f]}")
    from .grid import loop_defaults
    defaults = loop_defaults()
    for k in sorted(varying - {"init", "head"}):
        if k in d["loop"] or k in defaults:
            parts.append(f"{k}={d['loop'].get(k, defaults.get(k))}")
    return " / ".join(str(p) for p in parts)


def aggregate(rows: list[dict], loops: dict[str, dict]) -> dict:
    """Build the leaderboard from run rows (:func:`benchmark.results.scan`) and each run's loop options
    (``loops[id]``).  Returns ``{"tables": [...], "overall": [...], "runs": rows}`` (JSON-ready)."""
    by_table: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    baselines: dict[str, list[dict]] = defaultdict(list)
    pruned = []
    scorings: dict[tuple, set] = defaultdict(set)  # (table, criterion) -> its (score_data, score_head) settings
    for r in rows:
        loop = loops.get(r["id"], {})
        if r["kind"] in BASELINE_KINDS.values() and (r["ratio"] or 0) == 0:
            baselines[_table_key(r, loop, True)].append(r)
        else:
            key = _table_key(r, loop, False)
            pruned.append((key, r))
            scorings[(key, r["criterion"])].add((r.get("score_data"), r.get("score_head")))
    for key, r in pruned:
        # a criterion run with several scoring settings in one table gets one row per setting
        name = r["criterion"] if len(scorings[(key, r["criterion"])]) < 2 else \
            f"{r['criterion']} [{r.get('score_data') or '-'}/{r.get('score_head') or '-'}]"
        by_table[key][(name, float(r["ratio"]))].append(r)
    keys = sorted(by_table)
    varying = set()
    for field in ("init", "head"):
        if len({json.loads(k)["cell"][field] for k in keys}) > 1:
            varying.add(field)
    loop_fields = {f for k in keys for f in json.loads(k)["loop"]}
    for f in loop_fields:
        if len({json.dumps(json.loads(k)["loop"].get(f)) for k in keys}) > 1:
            varying.add(f)
    tables = []
    for key in keys:
        cells = by_table[key]
        d = json.loads(key)
        kind = d["cell"]["kind"]
        metric = PRIMARY.get(kind, "top1")
        ratios = sorted({r for _, r in cells})
        criteria = sorted({c for c, _ in cells})
        entries = [_entry(c, r, cells[(c, r)], metric) for c in criteria for r in ratios if (c, r) in cells]
        base_runs = _baseline_runs(d, cells, baselines, rows)
        base = _entry(NO_CRITERION, 0.0, base_runs, metric) if base_runs is not None else None
        tables.append({"key": key, "label": _label(key, varying), "model": d["cell"]["model"],
                       "class_set": d["cell"]["class_set"], "kind": kind, "ratios": ratios, "metric": metric,
                       "criteria": criteria, "entries": entries, "baseline": base})
    return {"tables": tables, "overall": rank_overall(tables), "runs": rows}


def _baseline_runs(d: dict, cells: dict, baselines: dict, rows: list[dict]) -> list[dict] | None:
    """The runs of a table's unpruned baseline (None when it has none): the baseline cells whose options,
    ignoring the pruning-only ones, equal the table's (ignoring ``q`` too for a baseline evaluated without
    fine-tuning); for a ``direct`` (detection) table, the plug-in cells whose trained detectors it prunes."""
    if d["cell"]["kind"] == "direct":
        sources = {r.get("source_hash") for runs in cells.values() for r in runs}
        found = [r for r in rows if r["hash"] in sources]
        return found or None
    bkey = json.dumps({"cell": {**d["cell"], "kind": BASELINE_KINDS.get(d["cell"]["kind"], "prune")},
                       "loop": {k: v for k, v in d["loop"].items() if k not in PRUNE_ONLY}}, sort_keys=True)
    if bkey not in baselines:  # a baseline evaluated without fine-tuning ([baseline] finetune = false)
        bkey = next((k for k in baselines if _without_q(k) == _without_q(bkey)), bkey)
    return baselines.get(bkey)


def _without_q(key: str) -> str:
    d = json.loads(key)
    d["loop"].pop("q", None)
    return json.dumps(d, sort_keys=True)


def _entry(criterion: str, ratio: float, runs: list[dict], metric: str = "top1") -> dict:
    done = [r for r in runs if r["state"] == "done"]
    e = {"criterion": criterion, "ratio": ratio, "n": len(done), "n_runs": len(runs),
         "n_failed": sum(r["state"] == "failed" for r in runs),
         "n_unfinished": sum(r["state"] in ("partial", "pending") for r in runs),
         "seeds": sorted(r["seed"] for r in done), "errors": sorted({r["error"] for r in runs if r["error"]}),
         "ids": sorted(r["id"] for r in runs),
         f"{metric}_runs": sorted(({"seed": r["seed"], metric: float(r[metric])} for r in done
                                   if r.get(metric) is not None), key=lambda x: (x["seed"], x[metric]))}
    for m in (METRICS if metric == "top1" else DET_METRICS):
        e[m], e[m + "_std"] = mean_std([r.get(m) for r in done])
    for p in PROVENANCE + ("metric_split",) + (() if metric == "top1" else DET_PROVENANCE):
        e[p] = sorted({str(r.get(p)) for r in done if r.get(p) is not None})
    return e


def _ranks(values: dict[str, float]) -> dict[str, float]:
    order = sorted(values, key=lambda c: -values[c])
    ranks, i = {}, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for c in order[i:j + 1]:
            ranks[c] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pairs(entry: dict, rand: dict, metric: str = "top1") -> tuple[list[float], int]:
    """Seed-paired ``metric(entry) - metric(random)`` differences of one column (top-1, or mAP for detection),
    and the number of runs left unpaired (on either side: seed without a partner, or a seed that occurs twice
    in one entry)."""
    def by_seed(e):
        seeds: dict = defaultdict(list)
        for r in e.get(f"{metric}_runs", []):
            seeds[r["seed"]].append(r[metric])
        return seeds
    a, b = by_seed(entry), by_seed(rand)
    diffs, unpaired = [], 0
    for s in set(a) | set(b):
        if len(a.get(s, ())) == 1 and len(b.get(s, ())) == 1:
            diffs.append(a[s][0] - b[s][0])
        else:
            unpaired += len(a.get(s, ())) + len(b.get(s, ()))
    return diffs, unpaired


def rank_overall(tables: list[dict]) -> list[dict]:
    """Criteria ordered by mean normalised rank of their tables' metric (top-1; mAP for detection tables) over
    the (table, ratio) columns, with wins over random and the seed-paired difference to random (exact
    definitions in the module docstring)."""
    per = defaultdict(lambda: {"ranks": [], "top1": [], "damage": [], "beats": 0, "shared": 0, "diffs": [],
                               "unpaired": 0})
    metrics = set()
    for t in tables:
        m = t.get("metric", "top1")
        metrics.add(m)
        for ratio in t["ratios"]:
            col = {e["criterion"]: e for e in t["entries"] if e["ratio"] == ratio and e.get(m) is not None}
            k = len(col)
            if k < 2:
                continue
            rand = col.get("random")
            for c, rk in _ranks({c: e[m] for c, e in col.items()}).items():
                p, e = per[c], col[c]
                p["ranks"].append({"table": t["label"], "ratio": ratio, "rank": rk, "k": k,
                                   "norm": (rk - 1) / (k - 1)})
                p["top1"].append(e[m])
                if e.get("damage") is not None:
                    p["damage"].append(e["damage"])
                if rand is not None and c != "random":
                    p["shared"] += 1
                    p["beats"] += e[m] > rand[m]
                    diffs, unpaired = _pairs(e, rand, m)
                    p["diffs"] += diffs
                    p["unpaired"] += unpaired
    out = []
    name = next(iter(metrics)) if len(metrics) == 1 else "metric"  # top1, or map07 on a detection board
    for c, p in per.items():
        is_random = c == "random"
        d_mean, d_std = mean_std(p["diffs"])
        n = len(p["diffs"])
        out.append({
            "criterion": c, "norm_rank": mean_std([r["norm"] for r in p["ranks"]])[0], "columns": len(p["ranks"]),
            "wins": sum(r["rank"] == 1 for r in p["ranks"]), "ranks": p["ranks"],
            "beats_random": None if is_random else p["beats"], "random_columns": None if is_random else p["shared"],
            "vs_random": d_mean, "vs_random_std": d_std, "vs_random_n": None if is_random else n,
            "vs_random_se": None if d_std is None else d_std / math.sqrt(n),
            "vs_random_unpaired": None if is_random else p["unpaired"],
            f"mean_{name}": mean_std(p["top1"])[0], "mean_damage": mean_std(p["damage"])[0], "metric": name})
    return sorted(out, key=lambda o: (o["norm_rank"], o["criterion"]))


def build_leaderboard(results_dir, cell_ids=None) -> dict:
    """Scan ``results_dir`` (every run directory, through :mod:`benchmark.results`) and aggregate it;
    with ``cell_ids`` (a config's grid, :func:`benchmark.runner.read_experiments`), only those runs."""
    from .results import scan

    rows = scan(results_dir, cell_ids)
    return aggregate(rows, {r["id"]: r.get("loop", {}) for r in rows})
