"""The leaderboard: run rows aggregated over seeds into tables shaped like the paper's.

A **table** is every cell sharing model, class set, kind, init, head and loop options
except ``criterion``, ``ratio`` and ``seed``; its rows are criteria, its columns pruning
ratios.  The unpruned baseline (ratio 0) of a table is the baseline cell whose options,
ignoring the pruning-only ones, equal the table's (ignoring ``q`` too when the baseline was
evaluated without fine-tuning).

Each **entry** (table x criterion x ratio) aggregates the ``done`` runs of all its seeds:
for every metric, ``mean`` = arithmetic mean and ``std`` = sample standard deviation
(``ddof=1``; ``None`` with a single seed).  Failed runs are counted (``n_failed``) and
their errors listed, never averaged.  Provenance (config hashes, code versions, class-list
sha256, devices) is the sorted set over the entry's runs.

The **overall ranking** ranks criteria within every (table, ratio) column that has at
least two criteria by mean top-1 (1 = best, ties share the mean rank) and orders criteria
by their mean rank over columns; ``vs_random`` is the mean top-1 difference to ``random``
in the columns where both appear.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

from .grid import BASELINE_CRITERION

METRICS = ("top1", "top5", "val_top1", "params_reduction", "macs_reduction", "speedup", "damage",
           "damage_max", "recovery", "epochs_to_recover", "epochs_to_baseline", "images_finetune",
           "images_scoring", "params", "macs", "latency_ms", "after_steps_top1")
PROVENANCE = ("hash", "config_hash", "code_version", "class_sha256", "device")
_TABLE_EXCLUDE = ("criterion", "ratio", "seed", "id", "hash")
_PRUNE_ONLY = ("layers", "order", "one_shot", "round_to", "min_keep", "score_images", "score_classes", "p")


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
    keep = {k: v for k, v in loop.items() if k not in _TABLE_EXCLUDE and not (baseline and k in _PRUNE_ONLY)}
    cell = {k: row[k] for k in ("model", "class_set", "kind", "init", "head")}
    return json.dumps({"cell": cell, "loop": keep}, sort_keys=True)


def _label(key: str, varying: set[str]) -> str:
    d = json.loads(key)
    parts = [d["cell"]["model"], d["cell"]["class_set"]]
    if d["cell"]["kind"] != "prune":
        parts.append(f"{d['cell']['kind']} from scratch")
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
    for r in rows:
        loop = loops.get(r["id"], {})
        if r["kind"] == "prune" and (r["ratio"] or 0) == 0:
            baselines[_table_key(r, loop, True)].append(r)
        else:
            by_table[_table_key(r, loop, False)][(r["criterion"], float(r["ratio"]))].append(r)
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
        bkey = json.dumps({"cell": {**d["cell"], "kind": "prune"},
                           "loop": {k: v for k, v in d["loop"].items() if k not in _PRUNE_ONLY}}, sort_keys=True)
        ratios = sorted({r for _, r in cells})
        criteria = sorted({c for c, _ in cells})
        entries = [_entry(c, r, cells[(c, r)]) for c in criteria for r in ratios if (c, r) in cells]
        if bkey not in baselines:  # a baseline evaluated without fine-tuning ([baseline] finetune = false)
            bkey = next((k for k in baselines if _without_q(k) == _without_q(bkey)), bkey)
        base = _entry(BASELINE_CRITERION, 0.0, baselines.get(bkey, [])) if bkey in baselines else None
        tables.append({"key": key, "label": _label(key, varying), "model": d["cell"]["model"],
                       "class_set": d["cell"]["class_set"], "kind": d["cell"]["kind"], "ratios": ratios,
                       "criteria": criteria, "entries": entries, "baseline": base})
    return {"tables": tables, "overall": rank_overall(tables), "runs": rows}


def _without_q(key: str) -> str:
    d = json.loads(key)
    d["loop"].pop("q", None)
    return json.dumps(d, sort_keys=True)


def _entry(criterion: str, ratio: float, runs: list[dict]) -> dict:
    done = [r for r in runs if r["state"] == "done"]
    e = {"criterion": criterion, "ratio": ratio, "n": len(done), "n_runs": len(runs),
         "n_failed": sum(r["state"] == "failed" for r in runs),
         "n_unfinished": sum(r["state"] in ("partial", "pending") for r in runs),
         "seeds": sorted(r["seed"] for r in done), "errors": sorted({r["error"] for r in runs if r["error"]}),
         "ids": sorted(r["id"] for r in runs)}
    for m in METRICS:
        e[m], e[m + "_std"] = mean_std([r.get(m) for r in done])
    for p in PROVENANCE + ("metric_split",):
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


def rank_overall(tables: list[dict]) -> list[dict]:
    """Criteria ordered by mean rank of top-1 over all (table, ratio) columns (see module docstring)."""
    rank_lists, deltas, top1s, damages = defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
    for t in tables:
        for ratio in t["ratios"]:
            col = {e["criterion"]: e for e in t["entries"] if e["ratio"] == ratio and e["top1"] is not None}
            if len(col) < 2:
                continue
            for c, rk in _ranks({c: e["top1"] for c, e in col.items()}).items():
                rank_lists[c].append(rk)
                top1s[c].append(col[c]["top1"])
                if col[c]["damage"] is not None:
                    damages[c].append(col[c]["damage"])
                if "random" in col:
                    deltas[c].append(col[c]["top1"] - col["random"]["top1"])
    out = [{"criterion": c, "mean_rank": mean_std(rks)[0], "columns": len(rks), "wins": sum(r == 1 for r in rks),
            "mean_top1": mean_std(top1s[c])[0], "vs_random": mean_std(deltas[c])[0],
            "mean_damage": mean_std(damages[c])[0]} for c, rks in rank_lists.items()]
    return sorted(out, key=lambda o: (o["mean_rank"], o["criterion"]))


def build_leaderboard(results_dir) -> dict:
    """Scan ``results_dir`` (every run directory, through :mod:`benchmark.results`) and aggregate it."""
    from .results import scan

    rows = scan(results_dir)
    return aggregate(rows, {r["id"]: r.get("loop", {}) for r in rows})
