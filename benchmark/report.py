"""The self-contained HTML report: every table and every plot (PNG embedded as base64) in one page.

No external CSS, script, font or image is referenced, so the file opens offline and can be
mailed or attached to a paper's supplementary material as it is.  Published numbers are in
a separate, visibly marked section at the end.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

# formats, plots (matplotlib) and the reference tables are imported where used, so that the CLI's
# ``--help`` (which reads FORMATS) stays light

#: Output formats of :func:`render` (``imagenet52p-bench leaderboard --format``).
FORMATS = ("md", "csv", "overall-csv", "html", "json")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eee} td:first-child,th:first-child{text-align:left}
.note{background:#fff3cd;border:1px solid #e0c060;padding:0.6em 1em;font-weight:bold}
.reference{background:#f3f3f8;border:3px double #668;padding:0.5em 1.5em;margin-top:3em}
.reference h2{color:#446}
figure{margin:1em 0} figcaption{font-size:13px;color:#555}
img{max-width:100%;border:1px solid #ddd}
details{margin-bottom:1em} .small{font-size:12px;color:#555}
"""


def _table_html(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(board: dict, title: str = "Leaderboard", note: str | None = None, description: str = "",
                references: tuple[str, ...] | None = None, figures: list[tuple[str, bytes]] | None = None) -> str:
    """The report page as a string.  ``figures`` defaults to :func:`benchmark.plots.all_figures`."""
    esc = html.escape
    from . import formats
    from .plots import all_figures
    from .reference import display_rows, reference_tables

    figs = all_figures(board) if figures is None else figures
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if note:
        out.append(f'<p class="note" id="note">{esc(note)}</p>')
    if description:
        out.append(f"<p>{esc(description)}</p>")
    n_runs = len(board["runs"])
    states = {}
    for r in board["runs"]:
        states[r["state"]] = states.get(r["state"], 0) + 1
    out.append(f'<p class="small">{n_runs} runs: ' + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
               + f". {esc(formats.intro(board, html=True))}</p>")
    out.append('<section id="our-results"><h2>Our measurements</h2>')
    for i, t in enumerate(board["tables"]):
        out.append(f'<h3 id="table-{i}">{esc(t["label"])}</h3>')
        out.append(_table_html(*formats.main_grid(t), cls="leaderboard"))
        out.append("<details><summary>all columns (reductions, speedup, plasticity, provenance)</summary>")
        out.append(_table_html(*formats.detail_rows(t), cls="detail") + "</details>")
    if board["overall"]:
        out.append(f"<h3 id='overall'>{esc(formats.overall_title(board))}</h3>"
                   f"<p class='small'>{esc(formats.overall_note(board))}</p>")
        out.append(_table_html(*formats.overall_rows(board), cls="overall"))
    failures = [r for r in board["runs"] if r["state"] == "failed"]
    if failures:
        out.append("<h3>Failed runs</h3>")
        out.append(_table_html(["Run", "Error"], [[r["id"], r["error"]] for r in failures], cls="failures"))
    out.append("<h2>Plots</h2>")
    for caption, png in figs:
        data = base64.b64encode(png).decode("ascii")
        out.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{esc(caption)}</figcaption></figure>")
    out.append("</section>")
    refs = reference_tables(references)
    if refs:
        out.append('<section class="reference" id="reference"><h2>Published numbers — reference only, '
                   "NOT measured by this benchmark</h2>")
        for r in refs:
            out.append(f"<h3>{esc(r['title'])}</h3><p class='small'>Source: {esc(r['source'])}. "
                       f"Baseline: {esc(r['baseline'])}.</p>")
            out.append(_table_html(r["header"], display_rows(r), cls="published"))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(board: dict, path: str | Path, **kw) -> Path:
    """Write :func:`render_html` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(board, **kw), encoding="utf-8")
    return path


def render(results, fmt: str, note: str | None = None, board: dict | None = None, config: str | None = None) -> str:
    """The leaderboard of RESULTS in ``fmt`` (``md``, ``csv``, ``overall-csv``, ``html``, ``json``).

    Cells: those of config ``config`` as recorded in RESULTS (:func:`benchmark.runner.select_experiment`);
    with no ``config``, the only config recorded there, and every cell when none is (a folder with several
    configs and no ``config`` is a ValueError listing them); run directories outside the config's grid are
    left out.  Title, description and reference tables come from that record.  ``board``: RESULTS already
    aggregated by :func:`benchmark.leaderboard.build_leaderboard`, to render several formats from one scan
    (re-aggregated from its runs when it holds cells of other configs)."""
    from . import formats
    from .leaderboard import aggregate, build_leaderboard
    from .runner import select_experiment

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    exp = select_experiment(results, config)
    ids = exp.get("cell_ids")
    if board is None:
        board = build_leaderboard(results, ids)
    elif ids is not None and not {r["id"] for r in board["runs"]} <= set(ids):
        keep = set(ids)
        rows = [r for r in board["runs"] if r["id"] in keep]
        board = aggregate(rows, {r["id"]: r.get("loop", {}) for r in rows})
    title = f"Leaderboard: {exp.get('name', Path(results).name)}"
    refs = tuple(exp.get("reference", ())) or None
    if fmt == "md":
        return formats.to_markdown(board, title, note, refs)
    if fmt == "csv":
        return formats.to_csv(board)
    if fmt == "overall-csv":
        return formats.to_csv_overall(board)
    if fmt == "json":
        meta = {k: v for k, v in exp.items() if k != "cell_ids"} or None
        return formats.to_json(board, refs, meta)
    return render_html(board, title=title, note=note, description=exp.get("description", ""), references=refs)
