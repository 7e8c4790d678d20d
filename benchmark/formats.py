"""Text renderings of a leaderboard (:func:`benchmark.leaderboard.aggregate`): Markdown, CSV (entries, or
the overall ranking with :func:`to_csv_overall`), JSON.

Accuracies and reductions are shown in percent (``65.03 ± 0.31`` = mean ± sample std over
seeds; ``(n)`` seeds when more than one); ``—`` means not measured.  The HTML page is
:mod:`benchmark.report`.
"""

from __future__ import annotations

import csv
import io
import json

from .leaderboard import DET_METRICS, DET_PROVENANCE, METRICS, PROVENANCE
from .reference import display_rows, reference_tables

DETAIL_COLUMNS = (
    ("top1", "Top-1", "pct"), ("top5", "Top-5", "pct"), ("params_reduction", "Params −", "pct"),
    ("macs_reduction", "MACs −", "pct"), ("speedup", "Speedup", "x"), ("damage", "Damage", "pct"),
    ("recovery", "Recovery", "pct"), ("epochs_to_recover", "Epochs to recover", "num"),
    ("images_finetune", "Images fine-tune", "int"), ("images_scoring", "Images scoring", "int"),
    ("params", "Params", "int"), ("params_target", "Params target (reduced: the pruned arch.)", "int"),
)

#: The detail columns of a detection table (benchmark.detection.results defines each).
DET_DETAIL_COLUMNS = (
    ("map07", "mAP (VOC07 11-pt)", "pct"), ("map10", "mAP (VOC2010+ area)", "pct"), ("fps", "fps", "f1"),
    ("fps_base", "fps unpruned", "f1"), ("fps_speedup", "fps speedup", "x"),
    ("predicted_speedup", "GFLOPs-predicted speedup", "x"), ("speedup_vs_predicted", "measured / predicted", "x"),
    ("gflops", "GFLOPs", "f2"), ("gflops_reduction", "GFLOPs −", "pct"), ("params_reduction", "Params −", "pct"),
)
#: How a table's metric is named in its header and notes.
METRIC_NAMES = {"top1": "Top-1", "map07": "mAP (VOC07 11-point)"}


def _columns(t: dict) -> tuple:
    return DETAIL_COLUMNS if t.get("metric", "top1") == "top1" else DET_DETAIL_COLUMNS


def fmt(v, kind: str = "pct", std=None, n: int | None = None) -> str:
    if v is None:
        return "—"
    if kind == "pct":
        s = f"{100 * v:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")
    elif kind == "x":
        s = f"{v:.2f}×" + ("" if std is None else f" ± {std:.2f}")
    elif kind == "int":
        s = f"{v:,.0f}"
    elif kind in ("f1", "f2"):
        s = f"{v:.{kind[1]}f}" + ("" if std is None else f" ± {std:.{kind[1]}f}")
    else:
        s = f"{v:g}" if std is None else f"{v:.2f} ± {std:.2f}"
    return s + (f" ({n})" if n and n > 1 else "")


def _ratio(r: float) -> str:
    return f"{100 * r:g}%"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


#: The provenance columns of a detail table: ``(entry key, header)``.
PROV_COLUMNS = (("hash", "Cell hash"), ("config_hash", "Run config hash"), ("code_version", "Code"),
                ("class_sha256", "Class sha256"), ("weights", "Weights"), ("device", "Device"), ("score_data", "Scoring data"),
                ("score_head", "Scoring loss"))
DET_PROV_COLUMNS = (("hash", "Cell hash"), ("upstream_cell", "Upstream cell"), ("code_version", "Code"),
                    ("device", "Device"))


def _prov_columns(t: dict) -> tuple:
    return PROV_COLUMNS if t.get("metric", "top1") == "top1" else DET_PROV_COLUMNS


def _prov(e: dict, columns=PROV_COLUMNS) -> list[str]:
    return [", ".join(x[:12] if p in ("hash", "config_hash", "class_sha256") else x for x in e.get(p, ())) or "—"
            for p, _ in columns]


def main_grid(t: dict) -> tuple[list[str], list[list[str]]]:
    """The paper-shaped table: rows criteria (baseline first), columns ratios, cells the table's metric (top-1;
    VOC07 mAP for detection)."""
    m = t.get("metric", "top1")
    header = ["Criterion"] + [_ratio(r) for r in t["ratios"]]
    rows = []
    b = t["baseline"]
    if b is not None:
        rows.append(["unpruned (baseline)"] + [fmt(b[m], "pct", b[m + "_std"], b["n"])] * len(t["ratios"]))
    idx = {(e["criterion"], e["ratio"]): e for e in t["entries"]}
    for c in t["criteria"]:
        cells = []
        for r in t["ratios"]:
            e = idx.get((c, r))
            if e is None:
                cells.append("")
            elif e["n"] == 0:
                cells.append("failed" if e["n_failed"] else "not run")
            else:
                cells.append(fmt(e[m], "pct", e[m + "_std"], e["n"]))
        rows.append([c] + cells)
    return header, rows


def detail_rows(t: dict) -> tuple[list[str], list[list[str]]]:
    columns = _columns(t)
    prov = _prov_columns(t)
    header = ["Criterion", "Ratio", "Seeds"] + [h for _, h, _ in columns] + [h for _, h in prov] + ["Errors"]
    rows = []
    for e in ([t["baseline"]] if t["baseline"] else []) + t["entries"]:
        name = "unpruned" if e is t["baseline"] else e["criterion"]
        cols = [fmt(e.get(m), k, e.get(m + "_std")) for m, _, k in columns]
        errs = "; ".join(e["errors"])[:200] or ("" if not e["n_unfinished"] else f"{e['n_unfinished']} unfinished")
        rows.append([name, _ratio(e["ratio"]), f"{e['n']}/{e['n_runs']}"] + cols + _prov(e, prov) + [errs])
    return header, rows


OVERALL_HEADER = [
    "Rank", "Criterion", "Mean normalised rank (0 = best, 1 = worst)", "Columns", "Best alone in",
    "Beats random in (columns)", "Δ top-1 vs random, seed-paired: mean ± std (pp)", "SE of Δ (pp)",
    "Seed pairs", "Unpaired runs", "Mean top-1", "Mean damage",
]

#: What the overall ranking's columns mean, printed under it (definitions: benchmark.leaderboard).
OVERALL_NOTE = (
    "Columns are the (table, ratio) pairs with at least two criteria. In each, criteria are ranked by mean top-1 "
    "(ties share the mean rank) and the rank is normalised to (rank − 1)/(k − 1) for k criteria, so 0 is the best "
    "and 1 the worst of any column size; the table is ordered by the mean of these over the columns a criterion "
    "appears in. Beats random: columns where its mean top-1 is above random's / columns both appear in. "
    "Δ vs random: runs of the criterion and of random in the same table, ratio and seed are paired; mean and sample "
    "std (ddof = 1) of top1(criterion, seed) − top1(random, seed) over all pairs of all shared columns, in "
    "percentage points; SE = std/√pairs (pairs treated as independent). Runs without a partner seed are left out "
    "and counted. Mean top-1 / damage: means over the criterion's columns.")


def _metric_name(board: dict) -> str:
    metric = board["overall"][0].get("metric", "top1") if board["overall"] else "top1"
    return METRIC_NAMES.get(metric, metric)


def overall_title(board: dict) -> str:
    name = _metric_name(board)
    return f"Overall ranking (mean normalised rank of {'top-1' if name == 'Top-1' else name} over every table × ratio column)"


def overall_note(board: dict) -> str:
    """:data:`OVERALL_NOTE`, with the board's metric (top-1, or mAP on a detection board)."""
    name = _metric_name(board)
    return OVERALL_NOTE if name == "Top-1" else OVERALL_NOTE.replace("top-1", name).replace("top1", "mAP")


def _pp(v, std=None) -> str:
    if v is None:
        return "—"
    return f"{100 * v:+.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def overall_rows(board: dict) -> tuple[list[str], list[list[str]]]:
    """The overall ranking (:func:`benchmark.leaderboard.rank_overall`): one row per criterion."""
    rows = []
    for i, o in enumerate(board["overall"]):
        rand = o["random_columns"] is None  # random itself: the reference
        rows.append([
            str(i + 1), o["criterion"], f"{o['norm_rank']:.3f}", str(o["columns"]), str(o["wins"]),
            "(reference)" if rand else (f"{o['beats_random']}/{o['random_columns']}" if o["random_columns"] else "—"),
            "(reference)" if rand else _pp(o["vs_random"], o["vs_random_std"]),
            "—" if o["vs_random_se"] is None else f"{100 * o['vs_random_se']:.2f}",
            "—" if rand else str(o["vs_random_n"]), "—" if rand else str(o["vs_random_unpaired"]),
            fmt(o[f"mean_{o.get('metric', 'top1')}"]), fmt(o["mean_damage"])])
    metric = board["overall"][0].get("metric", "top1") if board["overall"] else "top1"
    header = list(OVERALL_HEADER)
    if metric != "top1":
        name = METRIC_NAMES.get(metric, metric)
        header = [h.replace("top-1", name).replace("Top-1", name) for h in header]
    return header, rows


OVERALL_CSV_FIELDS = ("rank", "criterion", "norm_rank", "columns", "wins", "beats_random", "random_columns",
                      "vs_random", "vs_random_std", "vs_random_se", "vs_random_n", "vs_random_unpaired",
                      "mean_top1", "mean_damage")


def to_csv_overall(board: dict) -> str:
    """The overall ranking as CSV, one row per criterion, raw fractions (``vs_random`` 0.012 = +1.2 points);
    fields as in :func:`benchmark.leaderboard.rank_overall`, empty = not applicable."""
    metric = board["overall"][0].get("metric", "top1") if board["overall"] else "top1"
    fields = [f"mean_{metric}" if k == "mean_top1" else k for k in OVERALL_CSV_FIELDS]  # mean_map07: detection
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for i, o in enumerate(board["overall"]):
        w.writerow({"rank": i + 1, **{k: ("" if o[k] is None else o[k]) for k in fields[1:]}})
    return buf.getvalue()


def intro(board: dict, html: bool = False) -> str:
    """The sentence above the tables (Markdown, or the HTML report's): what their numbers are."""
    if any(t.get("metric", "top1") != "top1" for t in board["tables"]):
        return ("mAP (VOC07 11-point, PASCAL devkit rules: difficult objects neither positives nor false positives) "
                "in percent on VOC test, evaluated once on the trained detector (the one selected on the held-out "
                "val subset when the config holds one out), mean ± sample std over seeds (n). fps: batch 1, whole "
                "pipeline, median, interleaved in the same run with the trained unpruned detector; GFLOPs at a "
                "fixed input and proposal count (docs/detection.md).")
    if html:
        return ("Top-1 in percent on the test split (evaluated once, on the model selected on val); "
                "mean ± sample std over seeds (number of seeds in brackets).")
    return ("Top-1 in percent on the test split (evaluated once, on the model selected on val), "
            "mean ± sample std over seeds (n). Damage/recovery: mean over layer steps of the val top-1 drop "
            "after removing filters / the gain from fine-tuning that step.")


def to_markdown(board: dict, title: str = "Leaderboard", note: str | None = None,
                references: tuple[str, ...] | None = None) -> str:
    parts = [f"# {title}", ""]
    if note:
        parts += [f"> **{note}**", ""]
    parts += [intro(board), ""]
    for t in board["tables"]:
        parts += [f"## {t['label']}", "", _md_table(*main_grid(t)), "", _md_table(*detail_rows(t)), ""]
    if board["overall"]:
        parts += [f"## {overall_title(board)}", "", overall_note(board), "", _md_table(*overall_rows(board)), ""]
    refs = reference_tables(references)
    if refs:
        parts += ["---", "", "## Published numbers (reference only — NOT measured by this benchmark; in percent)", ""]
        for r in refs:
            parts += [f"### {r['title']}", "", f"Source: {r['source']}. Baseline: {r['baseline']}.", "",
                      _md_table(r["header"], display_rows(r)), ""]
    return "\n".join(parts).rstrip() + "\n"


def csv_rows(board: dict) -> list[dict]:
    out = []
    for t in board["tables"]:
        for e in ([t["baseline"]] if t["baseline"] else []) + t["entries"]:
            row = {"table": t["label"], "model": t["model"], "class_set": t["class_set"], "kind": t["kind"],
                   "criterion": "unpruned" if e is t["baseline"] else e["criterion"], "ratio": e["ratio"],
                   "n": e["n"], "n_failed": e["n_failed"], "seeds": " ".join(map(str, e["seeds"]))}
            for m in (METRICS if t.get("metric", "top1") == "top1" else DET_METRICS):
                row[m], row[m + "_std"] = e[m], e[m + "_std"]
            for p in PROVENANCE + ("metric_split",) + (() if t.get("metric", "top1") == "top1" else DET_PROVENANCE):
                row[p] = ";".join(e[p])
            row["errors"] = " | ".join(e["errors"])
            out.append(row)
    return out


def to_csv(board: dict) -> str:
    rows = csv_rows(board)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def to_json(board: dict, references: tuple[str, ...] | None = None, experiment: dict | None = None) -> str:
    """The board, the reference tables and (when given) the config's experiment record as JSON."""
    doc = {**board, "reference": reference_tables(references)}
    if experiment:
        doc["experiment"] = experiment
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"
