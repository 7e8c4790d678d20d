"""The overall ranking on constructed boards: normalised ranks comparable across column sizes, wins over
random, and the seed-paired difference to random (rows built like ``benchmark.results.read_run``'s)."""
import csv
import io
import json
import math
import statistics

import pytest

from benchmark import formats
from benchmark.leaderboard import aggregate
from benchmark.report import render_html


def row(criterion, ratio, seed, top1, class_set="full", state="done", damage=0.1):
    """A run row as :func:`benchmark.results.read_run` returns it (only the fields the leaderboard reads)."""
    rid = f"tinyvgg-{class_set}-prune-{criterion}-r{100 * ratio:g}-s{seed}-{abs(hash((criterion, top1))) % 10**8:08d}"
    done = state == "done"
    r = {"id": rid, "hash": rid[-8:] * 2, "state": state, "model": "tinyvgg", "class_set": class_set,
         "kind": "prune", "init": "pretrained", "head": "restrict", "criterion": criterion, "ratio": ratio,
         "seed": seed, "code_version": "0+gtest", "class_sha256": "0" * 64, "class_set_name": class_set,
         "device": "cpu", "error": None if done else "RuntimeError: boom",
         "loop": {"criterion": criterion, "ratio": ratio, "seed": seed, "version": 1}}
    if done:
        r.update({"top1": top1, "top5": min(1.0, top1 + 0.2), "damage": damage, "metric_split": "test"})
    return r


def overall(rows):
    board = aggregate(rows, {r["id"]: r["loop"] for r in rows})
    return board, {o["criterion"]: o for o in board["overall"]}


def column(class_set, ratio, order, seed=0, top=0.9, step=0.05):
    """One column: ``order`` from best to worst, mean top-1 decreasing by ``step``."""
    return [row(c, ratio, seed, top - i * step, class_set) for i, c in enumerate(order)]


def test_normalised_rank_is_comparable_across_column_sizes():
    """A is 4th of 7 (the median of its column), B is 3rd and last of 3: the mean raw rank put B (3) ahead of
    A (4) although B is the worst of its column; normalised, A is 0.5 and B 1.0."""
    seven = column("a", 0.5, ["c1", "c2", "c3", "A", "c5", "c6", "c7"])
    three = column("b", 0.5, ["d1", "d2", "B"])
    board, o = overall(seven + three)
    assert o["A"]["norm_rank"] == pytest.approx(0.5) and o["B"]["norm_rank"] == pytest.approx(1.0)
    names = [x["criterion"] for x in board["overall"]]
    assert names.index("A") < names.index("B")
    assert names == ["c1", "d1", "c2", "c3", "A", "d2", "c5", "c6", "B", "c7"]  # ties (by value) by name
    assert o["A"]["ranks"] == [{"table": board["tables"][0]["label"], "ratio": 0.5, "rank": 4.0, "k": 7,
                                "norm": 0.5}]
    assert o["B"]["ranks"][0]["rank"] == 3.0 and o["B"]["ranks"][0]["k"] == 3


@pytest.mark.parametrize("sizes", [(2, 3, 7), (5, 2)])
def test_always_worst_is_one_and_always_best_is_zero_whatever_the_column_size(sizes):
    rows = []
    for i, k in enumerate(sizes):
        rows += column(f"set{i}", 0.5, ["best"] + [f"m{j}" for j in range(k - 2)] + ["worst"])
    board, o = overall(rows)
    assert [r["norm"] for r in o["worst"]["ranks"]] == [1.0] * len(sizes)
    assert o["worst"]["norm_rank"] == 1.0 and o["best"]["norm_rank"] == 0.0
    assert [r["k"] for r in o["worst"]["ranks"]] == list(sizes)
    assert o["best"]["wins"] == len(sizes) and o["worst"]["wins"] == 0
    assert board["overall"][0]["criterion"] == "best" and board["overall"][-1]["criterion"] == "worst"


def test_ties_share_the_mean_rank_before_normalising():
    rows = [row("x", 0.5, 0, 0.8, "a"), row("y", 0.5, 0, 0.8, "a"), row("z", 0.5, 0, 0.7, "a"),
            row("w", 0.5, 0, 0.6, "a"),  # k = 4: x, y share ranks 1-2 -> 1.5 -> 0.5/3
            row("x", 0.5, 0, 0.5, "b"), row("y", 0.5, 0, 0.5, "b"), row("z", 0.5, 0, 0.5, "b")]  # all tied
    _, o = overall(rows)
    assert [r["rank"] for r in o["x"]["ranks"]] == [1.5, 2.0]
    assert [r["norm"] for r in o["x"]["ranks"]] == pytest.approx([0.5 / 3, 0.5])
    assert o["x"]["norm_rank"] == pytest.approx((0.5 / 3 + 0.5) / 2) == o["y"]["norm_rank"]
    assert [r["norm"] for r in o["z"]["ranks"]] == pytest.approx([2 / 3, 0.5])
    assert o["w"]["norm_rank"] == 1.0
    assert o["x"]["wins"] == 0  # tied for first is not a win alone


def test_columns_with_one_criterion_are_skipped():
    rows = [row("l1", 0.5, 0, 0.7), row("random", 0.5, 0, 0.6),  # the only column of two
            row("l1", 0.25, 0, 0.8),  # alone at 25%
            row("apoz", 0.5, 0, 0.9, "sub"),  # alone in its table
            row("l1", 0.75, 0, 0.5), row("random", 0.75, 0, None, state="failed")]  # random failed: l1 alone
    board, o = overall(rows)
    assert set(o) == {"l1", "random"}
    assert o["l1"]["columns"] == 1 and o["l1"]["norm_rank"] == 0.0 and o["random"]["norm_rank"] == 1.0
    assert o["l1"]["beats_random"] == 1 and o["l1"]["random_columns"] == 1
    assert o["l1"]["mean_top1"] == pytest.approx(0.7)
    assert o["l1"]["vs_random"] == pytest.approx(0.1) and o["l1"]["vs_random_n"] == 1
    assert o["l1"]["vs_random_std"] is None and o["l1"]["vs_random_se"] is None  # one pair: no spread


PAIRED = {  # (class_set, ratio): {criterion: {seed: top1}}
    ("full", 0.5): {"l1": {0: 0.60, 1: 0.62, 2: 0.65}, "random": {0: 0.55, 1: 0.58, 3: 0.50}},
    ("full", 0.25): {"l1": {0: 0.70}, "random": {0: 0.69}, "apoz": {0: 0.72}},
    ("sub", 0.5): {"l1": {0: 0.40, 1: 0.41}, "random": {0: 0.42, 1: 0.41}},
    ("sub", 0.75): {"l1": {0: 0.30}, "apoz": {0: 0.20}},  # no random: not a shared column
}


def paired_rows():
    return [row(c, ratio, s, v, cs) for (cs, ratio), crits in PAIRED.items() for c, seeds in crits.items()
            for s, v in seeds.items()]


def test_delta_vs_random_is_paired_by_seed_and_unpaired_seeds_are_counted():
    _, o = overall(paired_rows())
    # by hand: full 50%: seeds 0, 1 pair (l1 seed 2 and random seed 3 do not); full 25%: seed 0; sub 50%: 0, 1
    d = [0.60 - 0.55, 0.62 - 0.58, 0.70 - 0.69, 0.40 - 0.42, 0.41 - 0.41]
    l1 = o["l1"]
    assert l1["vs_random_n"] == 5 and l1["vs_random_unpaired"] == 2
    assert l1["vs_random"] == pytest.approx(0.016, abs=1e-12) == pytest.approx(statistics.mean(d))
    assert l1["vs_random_std"] == pytest.approx(statistics.stdev(d), abs=1e-12)
    assert l1["vs_random_se"] == pytest.approx(statistics.stdev(d) / math.sqrt(5), abs=1e-12)
    # the old, unpaired figure (mean over columns of the difference of the means) is something else
    unpaired = statistics.mean([statistics.mean([0.60, 0.62, 0.65]) - statistics.mean([0.55, 0.58, 0.50]),
                                0.70 - 0.69, statistics.mean([0.40, 0.41]) - statistics.mean([0.42, 0.41])])
    assert abs(unpaired - l1["vs_random"]) > 0.005
    # wins over random: above random's mean in full 50% and 25%, below in sub 50%; sub 75% has no random
    assert (l1["beats_random"], l1["random_columns"]) == (2, 3)
    assert l1["columns"] == 4
    apoz = o["apoz"]
    assert (apoz["beats_random"], apoz["random_columns"]) == (1, 1)
    assert apoz["vs_random"] == pytest.approx(0.72 - 0.69) and apoz["vs_random_n"] == 1
    assert apoz["vs_random_unpaired"] == 0
    r = o["random"]
    assert r["vs_random"] is None and r["beats_random"] is None and r["vs_random_n"] is None


def test_a_seed_run_twice_in_one_entry_is_not_paired():
    rows = [row("l1", 0.5, 0, 0.7), row("l1", 0.5, 1, 0.72), row("random", 0.5, 0, 0.6),
            row("random", 0.5, 1, 0.61), row("random", 0.5, 1, 0.65)]  # seed 1 of random twice: ambiguous
    _, o = overall(rows)
    assert o["l1"]["vs_random_n"] == 1 and o["l1"]["vs_random"] == pytest.approx(0.1)
    assert o["l1"]["vs_random_unpaired"] == 3  # l1 seed 1 and both random seed-1 runs


def test_formats_show_the_ranking_with_headings_that_say_what_they_are():
    board, o = overall(paired_rows())
    header, rows = formats.overall_rows(board)
    assert "Mean normalised rank (0 = best, 1 = worst)" in header and "Mean rank" not in header
    assert any("seed-paired" in h for h in header) and "Seed pairs" in header and "SE of Δ (pp)" in header
    by = {r[1]: dict(zip(header, r)) for r in rows}
    l1 = by["l1"]
    assert l1["Beats random in (columns)"] == "2/3"
    assert l1["Δ top-1 vs random, seed-paired: mean ± std (pp)"] == \
        f"+1.60 ± {100 * o['l1']['vs_random_std']:.2f}"
    assert l1["Seed pairs"] == "5" and l1["Unpaired runs"] == "2"
    assert by["random"]["Beats random in (columns)"] == "(reference)"
    assert [r[1] for r in rows] == [x["criterion"] for x in sorted(o.values(), key=lambda x: x["norm_rank"])]
    md = formats.to_markdown(board)
    assert "(rank − 1)/(k − 1)" in md and "| Rank | Criterion | Mean normalised rank" in md
    got = list(csv.DictReader(io.StringIO(formats.to_csv_overall(board))))
    assert [g["criterion"] for g in got] == [r[1] for r in rows]
    g = next(g for g in got if g["criterion"] == "l1")
    assert float(g["vs_random"]) == pytest.approx(0.016) and g["vs_random_n"] == "5" and g["beats_random"] == "2"
    assert float(g["norm_rank"]) == pytest.approx(o["l1"]["norm_rank"])
    doc = json.loads(formats.to_json(board))
    assert {x["criterion"]: x["vs_random_se"] for x in doc["overall"]}["l1"] == pytest.approx(o["l1"]["vs_random_se"])
    page = render_html(board, figures=[])
    assert "Mean normalised rank (0 = best, 1 = worst)" in page and "seed-paired" in page
