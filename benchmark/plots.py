"""Plots of a leaderboard (matplotlib, Agg backend), as PNG bytes.

* Figure 1a: val top-1 after each layer step's fine-tuning (recovery), per criterion;
  step 0 is the unpruned network.
* Figure 1b: val top-1 right after removing each layer's filters (damage), per criterion.
* Figure 1c: val top-1 after every epoch of the final fine-tune (speed of recovery).
* Figure 1d: the same curve for different ``data_fraction``/``final_data_fraction`` values
  (quantum of data), for tables that differ only in those.
* Trade-off: test top-1 against MACs (fraction of the unpruned network), per criterion.

Curves are means over seeds (runs of one entry have the same number of steps and epochs).
PNGs carry no timestamp or software tag, so the same leaderboard gives the same bytes.
"""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STYLE = {"random": dict(color="black", linewidth=2.2, linestyle="--")}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _mean_curve(curves: list[list[float]]) -> list[float] | None:
    curves = [c for c in curves if c]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    return [sum(c[i] for c in curves) / len(curves) for i in range(n)]


def _runs_by_id(board: dict) -> dict:
    return {r["id"]: r for r in board["runs"] if r["state"] == "done"}


def _entry_runs(entry: dict, runs: dict) -> list[dict]:
    return [runs[i] for i in entry["ids"] if i in runs]


def figure1abc(board: dict, table: dict, ratio: float) -> bytes | None:
    """Figures 1a, 1b and 1c side by side for one table and ratio (None when nothing ran)."""
    runs = _runs_by_id(board)
    entries = [e for e in table["entries"] if e["ratio"] == ratio and e["n"] > 0]
    if not entries:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    layers = None
    for e in entries:
        rs = _entry_runs(e, runs)
        style = _STYLE.get(e["criterion"], {})
        rec = _mean_curve([[r["steps"][0]["before"]] + [s["recovery"] for s in r["steps"]] for r in rs if r["steps"]])
        dmg = _mean_curve([[s["damage"] for s in r["steps"]] for r in rs if r["steps"]])
        ep = _mean_curve([[x["top1"] for x in r["epochs"]] for r in rs])
        if rs and rs[0]["steps"]:
            layers = [s["layer"] for s in rs[0]["steps"]]
        if rec:
            axes[0].plot(range(len(rec)), [100 * v for v in rec], marker="o", label=e["criterion"], **style)
        if dmg:
            axes[1].plot(range(1, len(dmg) + 1), [100 * v for v in dmg], marker="o", label=e["criterion"], **style)
        if ep:
            xs = [x["epoch"] for x in rs[0]["epochs"]][:len(ep)]
            axes[2].plot(xs, [100 * v for v in ep], marker="o", label=e["criterion"], **style)
    titles = ("(1a) accuracy after each layer step", "(1b) damage: accuracy right after pruning",
              "(1c) recovery per final fine-tune epoch")
    xlabels = ("layer step (0 = unpruned)", "layer step", "epoch")
    for ax, t, xl in zip(axes, titles, xlabels):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel("val top-1 (%)")
        ax.grid(alpha=0.3)
    if layers and len(layers) <= 16:
        axes[1].set_xticks(range(1, len(layers) + 1), layers, rotation=60, fontsize=7)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{table['label']} — {100 * ratio:g}% of filters removed per layer", fontsize=11)
    return _png(fig)


#: Per table metric: (cost key whose reduction is the x axis, x label, y label).
_AXES = {"top1": ("macs", "MACs (fraction of the unpruned network)", "test top-1 (%)"),
         "map07": ("gflops", "GFLOPs (fraction of the unpruned detector)", "VOC07 mAP (%)")}


def tradeoff(board: dict, table: dict) -> bytes | None:
    """Test top-1 (detection: VOC07 mAP) vs MACs (GFLOPs) as a fraction of unpruned, per criterion, with the
    unpruned baseline."""
    m = table.get("metric", "top1")
    cost, xlabel, ylabel = _AXES[m]
    entries = [e for e in table["entries"] if e["n"] > 0 and e.get(cost) is not None and e.get(m) is not None]
    if not entries:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in table["criteria"]:
        pts = sorted((1 - e[f"{cost}_reduction"], e[m], e[f"{m}_std"] or 0.0) for e in entries
                     if e["criterion"] == c)
        if pts:
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                        marker="o", capsize=3, label=c, **_STYLE.get(c, {}))
    b = table["baseline"]
    if b is not None and b.get(m) is not None:
        ax.scatter([1.0], [100 * b[m]], marker="*", s=160, color="gold", edgecolor="k", zorder=5,
                   label="unpruned")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{'accuracy vs MACs' if m == 'top1' else 'mAP vs GFLOPs'} — {table['label']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _quantum(fracs) -> str:
    steps, final = fracs
    return f"data {steps:g}" if final is None else f"data {steps:g}, final {final:g}"


def figure1d(board: dict) -> list[tuple[str, bytes]]:
    """Quantum of data: final fine-tune curves of tables that differ only in ``data_fraction``."""
    runs = _runs_by_id(board)
    groups: dict[str, list[tuple[float, dict]]] = {}
    for t in board["tables"]:
        d = json.loads(t["key"])
        fracs = (d["loop"].pop("data_fraction", 1.0), d["loop"].pop("final_data_fraction", None))
        groups.setdefault(json.dumps(d, sort_keys=True), []).append((fracs, t))
    out = []
    for _, members in sorted(groups.items()):
        if len({f for f, _ in members}) < 2:
            continue
        ratios = sorted({e["ratio"] for _, t in members for e in t["entries"]})
        fig, axes = plt.subplots(1, len(ratios), figsize=(5 * len(ratios), 4), squeeze=False)
        for ax, ratio in zip(axes[0], ratios):
            for frac, t in sorted(members, key=lambda m: json.dumps(m[0])):
                for e in t["entries"]:
                    if e["ratio"] != ratio or e["n"] == 0:
                        continue
                    rs = _entry_runs(e, runs)
                    ep = _mean_curve([[x["top1"] for x in r["epochs"]] for r in rs])
                    if ep:
                        xs = [x["epoch"] for x in rs[0]["epochs"]][:len(ep)]
                        ax.plot(xs, [100 * v for v in ep], marker="o",
                                label=f"{e['criterion']}, {_quantum(frac)}",
                                linestyle="--" if e["criterion"] == "random" else "-")
            ax.set_title(f"(1d) quantum of data — {100 * ratio:g}% removed", fontsize=10)
            ax.set_xlabel("final fine-tune epoch")
            ax.set_ylabel("val top-1 (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        label = members[0][1]["label"].split(" / data_fraction")[0].split(" / final_data_fraction")[0]
        out.append((f"Figure 1d — {label}", _png(fig)))
    return out


def all_figures(board: dict) -> list[tuple[str, bytes]]:
    """Every figure of the report as ``(caption, png bytes)``, in a fixed order."""
    figs = []
    for t in board["tables"]:
        for ratio in (t["ratios"] if t.get("metric", "top1") == "top1" else ()):  # detection: no layer curves
            png = figure1abc(board, t, ratio)
            if png:
                figs.append((f"Figure 1a–c — {t['label']}, {100 * ratio:g}%", png))
        png = tradeoff(board, t)
        if png:
            what = "Accuracy vs MACs" if t.get("metric", "top1") == "top1" else "mAP vs GFLOPs"
            figs.append((f"{what} — {t['label']}", png))
    return figs + figure1d(board)
