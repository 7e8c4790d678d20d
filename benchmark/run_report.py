"""What ``imagenet52p prune`` prints when a run ends: one row per layer step, then the final accuracy and cost.

The rows come from the run's ``summary.json`` (definitions in docs/numbers.md and
:mod:`benchmark.results`): ``kept`` = filters kept / before in the step's layers, ``damage`` = val top-1
lost by the removal (points), ``recovered`` = val top-1 regained by the step's ``p`` epochs (points),
``params`` / ``MACs`` of the network after the step.
"""

from __future__ import annotations


def _pts(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _kept(step: dict) -> str:
    per = step.get("per_layer") or {}
    before = sum(int(v[0]) for v in per.values()) if per else step.get("filters_before")
    kept = sum(int(v[1]) for v in per.values()) if per else step.get("filters_kept")
    return f"{kept}/{before}"


def format_run_summary(summary: dict, out_dir) -> str:
    """The table and closing lines for the run in ``out_dir`` (its ``summary.json`` as a dict)."""
    rows = [("step", "layer", "kept", "damage", "recovered", "params", "MACs")]
    for s in summary.get("steps", []):
        layers = s.get("layers") or [s.get("layer")]
        name = layers[0] if len(layers) == 1 else f"{layers[0]} (+{len(layers) - 1})"
        rows.append((str(s.get("step")), str(name), _kept(s), _pts(s.get("damage")), _pts(s.get("recovered")),
                     f"{int(s['params']):,}", f"{int(s['macs']):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    if len(rows) > 1:
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(rows[0], widths))))
        lines += ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in rows[1:]]
        lines.append("(damage: val top-1 points lost by the removal; recovered: points regained by the step's "
                     "fine-tuning; kept: filters kept / before)")
    base, final, test = summary["baseline"]["val"], summary["final"]["val"], summary.get("test") or {}
    lines.append(f"val top-1: {100 * base['top1']:.2f} before pruning, {100 * final['top1']:.2f} after fine-tuning"
                 + (f"; test top-1 {100 * test['top1']:.2f}, top-5 {100 * test['top5']:.2f}" if test else ""))
    cost = summary["cost"]
    lines.append(f"params x{cost['params_ratio']:.3f} ({cost['params']:,}), MACs x{cost['macs_ratio']:.3f} "
                 f"({cost['macs']:,})")
    lines.append(f"run directory: {out_dir} (summary.json, model/plan.json + state_dict.pt)")
    return "\n".join(lines)
