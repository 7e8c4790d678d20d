"""Experiment configs: schema checks, grid expansion, stable cell ids, partitioning."""
import itertools
import subprocess
import sys

import pytest

from benchmark.config import list_configs, load_config, parse_config
from benchmark.grid import expand_grid, partition

@pytest.fixture(autouse=True)
def _no_builds_around(monkeypatch, tmp_path):
    """The estimate counts the sizes of builds it finds ($IMAGENET52P_DATA, else the current directory): the
    tests that check the assumed sizes must not see a user's real builds."""
    monkeypatch.delenv("IMAGENET52P_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


BASE = {"name": "t", "data": {"full": "f", "sub": "s"}, "model": {"name": "tinyvgg", "weights": "pretrain"}}


def cfg(grid, **top):
    return parse_config({**BASE, **top, "grid": grid}, "test.toml")


def test_expansion_is_the_cartesian_product_plus_one_baseline_per_group():
    c = cfg([{"criterion": ["random", "l1", "apoz"], "ratio": [0.25, 0.5], "class_set": ["full", "sub"],
              "seed": [0, 1]}])
    cells = expand_grid(c)
    pruned = [x for x in cells if not x.is_baseline]
    base = [x for x in cells if x.is_baseline]
    assert len(pruned) == 3 * 2 * 2 * 2
    assert {(x.criterion, x.ratio, x.class_set, x.seed) for x in pruned} == set(
        itertools.product(["random", "l1", "apoz"], [0.25, 0.5], ["full", "sub"], [0, 1]))
    assert len(base) == 2 * 2  # class_set x seed
    assert all(b.criterion is None and b.ratio == 0.0 for b in base)  # the baseline: no criterion
    assert all(b.identity()["loop"]["criterion"] == "none" for b in base)  # spelt as before in its id
    assert len({x.id for x in cells}) == len(cells)


def test_no_baseline_when_disabled_and_subgrids_merge_duplicates():
    g = {"criterion": ["l1"], "ratio": [0.5]}
    c = cfg([g, dict(g), {"criterion": ["random"], "ratio": [0.5], "data_fraction": [0.1, 1.0]}],
            baseline={"unpruned": False})
    cells = expand_grid(c)
    assert sorted((x.criterion, x.loop_dict["data_fraction"]) for x in cells) == [
        ("l1", 1.0), ("random", 0.1), ("random", 1.0)]


def test_ids_are_stable_and_depend_on_every_identity_field():
    g = [{"criterion": ["l1"], "ratio": [0.5]}]
    a = expand_grid(cfg(g))
    b = expand_grid(cfg(g))
    assert [x.id for x in a] == [x.id for x in b]
    changed = expand_grid(cfg(g, base={"q": 3.0}))
    assert not {x.hash for x in a} & {x.hash for x in changed}
    other_model = expand_grid(parse_config({**BASE, "model": {"name": "tinyvgg", "weights": "w.pt"}, "grid": g}))
    assert not {x.hash for x in a} & {x.hash for x in other_model}
    # the id does not depend on where the builds are
    moved = expand_grid(parse_config({**BASE, "data": {"full": "/elsewhere", "sub": "s"}, "grid": g}))
    assert [x.id for x in a] == [x.id for x in moved]


def test_cell_hash_is_sha256_of_the_canonical_identity():
    import hashlib
    import json
    cell = expand_grid(cfg([{"criterion": ["l1"], "ratio": [0.5]}]))[0]
    blob = json.dumps(cell.identity(), sort_keys=True, separators=(",", ":")).encode()
    assert cell.hash == hashlib.sha256(blob).hexdigest()[:16]
    assert cell.id.endswith(cell.hash[:8])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 40])
def test_partition_puts_every_cell_in_exactly_one_task(n):
    cells = expand_grid(cfg([{"criterion": ["random", "l1", "apoz", "entropy"], "ratio": [0.25, 0.5, 0.75],
                              "seed": [0, 1]}]))
    shares = [partition(cells, i, n) for i in range(n)]
    ids = [c.id for s in shares for c in s]
    assert sorted(ids) == sorted(c.id for c in cells)  # every cell once, none twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # independent of the order cells are given in
    assert [c.id for c in partition(cells[::-1], 0, n)] == [c.id for c in shares[0]]


@pytest.mark.parametrize("i,n", [(2, 2), (-1, 3), (0, 0)])
def test_partition_refuses_bad_task_numbers(i, n):
    with pytest.raises(ValueError, match="task"):
        partition([], i, n)


@pytest.mark.parametrize("doc,match", [
    ({"grid": [{"criterion": ["l1"]}]}, "name"),
    ({"name": "x"}, r"\[\[grid\]\]"),
    ({"name": "x", "grid": [{"criterio": ["l1"]}]}, "criterio"),
    ({"name": "x", "grid": [{"kind": ["pruned"]}]}, "kind"),
    ({"name": "x", "grid": [{"ratio": []}]}, "empty"),
    ({"name": "x", "base": {"lr": 0.1, "lrr": 1}, "grid": [{"ratio": [0.5]}]}, "lrr"),
    ({"name": "x", "data": {"full": "a"}, "grid": [{"class_set": ["sub"]}]}, "sub"),
])
def test_schema_errors_name_the_file_and_the_key(doc, match):
    with pytest.raises(ValueError, match=match) as e:
        expand_grid(parse_config(doc, "bad.toml"))
    assert "bad.toml" in str(e.value)


def test_invalid_loop_option_is_reported_with_the_cell():
    with pytest.raises(ValueError, match="ratio"):
        expand_grid(cfg([{"criterion": ["l1"], "ratio": [1.5]}]))


def test_unknown_criterion_is_refused_with_the_list():
    with pytest.raises(ValueError, match="available: .*random"):
        expand_grid(cfg([{"criterion": ["l3"], "ratio": [0.5]}]))


def test_missing_config_lists_shipped_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="demo"):
        load_config(tmp_path / "nope.toml")


EXPECTED_CONFIGS = {"demo", "table1_vgg16", "table2_vgg16_fulldata", "table3_resnet50", "table4_imagenet52p",
                    "random52_control", "figure1", "scratch_baselines", "pretrained_vs_scratch", "table5", "table6",
                    "table7", "detect_demo"}


def test_every_shipped_config_parses_and_expands():
    names = set(list_configs())
    assert EXPECTED_CONFIGS <= names
    for name in names:
        c = load_config(name)
        cells = expand_grid(c)
        assert cells, name
        assert c.estimate_gpu_hours is not None, name


def test_quoted_cell_counts_and_gpu_hours_are_what_the_commands_compute():
    """The config table of README.md and each config's ``estimate_gpu_hours`` quote ``imagenet52p-bench
    estimate`` (cells and GPU-hours rounded to the hour); a changed grid or formula must update them."""
    from pathlib import Path

    from benchmark.estimate import estimate

    readme = (Path(__file__).resolve().parents[2] / "docs" / "benchmark.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Benchmark runner and leaderboard"):]
    section = section[section.index("### Configs"):section.index("#### What a GPU user runs")]
    rows = {}
    for line in section.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cols) == 4:
            rows[cols[0].strip("`")] = (int(cols[2]), cols[3])
    assert set(rows) == set(list_configs())  # every shipped config is in the table, and only those
    for name, (cells, hours) in rows.items():
        c = load_config(name)
        assert cells == len(expand_grid(c)), name
        if name in ("demo", "detect_demo"):  # CPU demos: timed by scripts/demo.py, scripts/detect_demo.py
            assert c.estimate_gpu_hours == 0 and hours.startswith("0 "), hours
            continue
        e = estimate(c)["gpu_hours"]
        assert float(hours) == c.estimate_gpu_hours, name
        assert abs(e - c.estimate_gpu_hours) <= 0.5, (name, e)


def test_paper_grids_have_the_paper_shape():
    t1 = expand_grid(load_config("table1_vgg16"))
    crit = {c.criterion for c in t1 if not c.is_baseline}
    assert {"random", "mean_activation", "entropy", "scaled_entropy", "l1", "apoz", "sensitivity"} <= crit
    assert {c.ratio for c in t1 if not c.is_baseline} == {0.25, 0.5, 0.75}
    t3 = expand_grid(load_config("table3_resnet50"))
    assert {c.loop_dict["layers"] for c in t3 if not c.is_baseline} == {"resnet50-16", "resnet50-32"}
    t4 = expand_grid(load_config("table4_imagenet52p"))
    assert "class_specific" in {c.criterion for c in t4}
    assert {c.class_set for c in t4} == {"imagenet52p"}


def test_list_cli_shows_every_cell_once_per_task_split(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmark.cli", "list", "table1_vgg16", "--num-tasks", "4",
                          "--out", str(tmp_path), "--data-root", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("invalid")]  # no builds here: cannot run
    assert all("not found" in ln for ln in lines)
    n = len(expand_grid(load_config("table1_vgg16")))
    assert len(lines) == n
    assert {ln.split()[2] for ln in lines} == {"0", "1", "2", "3"}


def test_estimate_follows_its_formula():
    from benchmark.estimate import estimate
    c = parse_config({"name": "e", "data": {"imagenet52p": "imagenet52p"}, "model": {"name": "tinyvgg"},
                      "base": {"layers": "all", "p": 1.0, "q": 2.0, "data_fraction": 0.5, "score_images": 100,
                               "class_set": "imagenet52p"},
                      "grid": [{"criterion": ["apoz"], "ratio": [0.5]}]}, "e.toml")
    e = estimate(c, train_ips=1000.0, eval_ips=2000.0)
    n = 65_000 * 0.5
    pruned_train, base_train = 4 * n + 2 * n + 4 * 100, 2 * n  # tinyvgg: 4 convs; apoz scores 100 images
    pruned_eval, base_eval = 2600 * (1 + 8 + 2) + 2600, 2600 * (1 + 2) + 2600
    assert e["cells"] == 2
    assert e["train_images"] == pruned_train + base_train
    assert e["eval_images"] == pruned_eval + base_eval
    assert e["gpu_hours"] == pytest.approx(((pruned_train + base_train) / 1000 + (pruned_eval + base_eval) / 2000)
                                           / 3600)
    weights_only = parse_config({"name": "e", "data": {"imagenet52p": "imagenet52p"}, "model": {"name": "tinyvgg"},
                                 "base": {"layers": "all", "p": 1.0, "q": 2.0, "data_fraction": 0.5,
                                          "final_data_fraction": 0.1, "score_images": 100,
                                          "class_set": "imagenet52p"},
                                 "baseline": {"unpruned": False},
                                 "grid": [{"criterion": ["l1"], "ratio": [0.5]}]}, "e.toml")
    assert estimate(weights_only)["train_images"] == 4 * n + 2 * 65_000 * 0.1  # l1 needs no scoring data


def test_estimate_counts_split_sizes_from_the_builds_it_finds(built, tmp_path):
    """With the build at hand, the estimate uses its manifest's counts instead of the assumed sizes, for a
    [data] path under --data-root and for a --data override alike."""
    from click.testing import CliRunner

    from benchmark.cli import main
    from benchmark.estimate import estimate
    from dataset_helpers import manifest
    _, build = built
    splits = {k: v["num_samples"] for k, v in manifest(build)["splits"].items()}
    doc = {"name": "e", "data": {"imagenet52p": build.name}, "model": {"name": "tinyvgg"},
           "base": {"layers": "all", "p": 1.0, "q": 2.0, "class_set": "imagenet52p"}, "baseline": {"unpruned": False},
           "grid": [{"criterion": ["l1"], "ratio": [0.5]}]}
    c = parse_config(doc, "e.toml")
    e = estimate(c, data_root=build.parent)
    assert e["sizes"]["imagenet52p"] == {"train": splits["train"], "val": splits["val"], "test": splits["test"],
                                         "source": str(build)}
    assert e["train_images"] == 4 * splits["train"] + 2 * splits["train"]  # tinyvgg: 4 layer steps of p=1, q=2
    assert e["eval_images"] == splits["val"] * (1 + 8 + 2) + splits["test"]
    assumed = estimate(c, data_root=tmp_path)  # no build there: the name says imagenet52p
    assert assumed["sizes"]["imagenet52p"]["source"] == "assumed (imagenet52p)"
    assert assumed["train_images"] == 6 * 65_000
    (tmp_path / "e.toml").write_text(
        'name = "e"\n[data]\nimagenet52p = "nowhere"\n[model]\nname = "tinyvgg"\n'
        '[base]\nlayers = "all"\np = 1.0\nq = 2.0\nclass_set = "imagenet52p"\n[baseline]\nunpruned = false\n'
        '[[grid]]\ncriterion = ["l1"]\nratio = [0.5]\n')
    res = CliRunner().invoke(main, ["estimate", str(tmp_path / "e.toml"), "--data", f"imagenet52p={build}"])
    assert res.exit_code == 0, res.output
    assert f"imagenet52p: {splits['train']} train, {splits['val']} val, {splits['test']} test images ({build})" \
        in res.output


def test_default_loop_options_are_not_part_of_the_identity():
    from pruning.loop import LoopConfig
    g = [{"criterion": ["l1"], "ratio": [0.5]}]
    implicit = expand_grid(cfg(g))
    explicit = expand_grid(cfg(g, base={"q": LoopConfig.q, "data_fraction": 1.0, "final_data_fraction": None}))
    assert [c.id for c in implicit] == [c.id for c in explicit]
    cell = implicit[0]
    assert set(cell.identity()["loop"]) == {"criterion", "ratio", "seed", "version"}
    assert cell.loop_dict["q"] == LoopConfig.q  # the full options are still there


@pytest.mark.parametrize("args,match", [
    (["leaderboard", "/nonexistent/results"], "/nonexistent/results"),
    (["run", "no_such_config"], "shipped: .*demo"),
    (["run", "demo", "--data", "full"], "NAME=PATH"),
    (["list", "demo", "--num-tasks", "0"], "num-tasks"),
    (["estimate", "demo"], "no size known"),
])
def test_cli_bad_input_gets_a_clear_message(args, match):
    from click.testing import CliRunner

    from benchmark.cli import main
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert pytest.importorskip("re").search(match, res.output), res.output


def test_a_results_folder_takes_a_second_config_and_keeps_both_records(tmp_path):
    """Configs share cells (identified by the hash of their resolved configuration), so a second config may
    run into a folder that holds another's results: each keeps its record (an old single-record
    experiment.json included) and the leaderboard asks which one to show."""
    import json

    from benchmark.runner import read_experiments, select_experiment, write_experiment
    out = tmp_path / "results"
    out.mkdir()
    record = {"name": "table1_vgg16", "description": "x", "reference": ["table1"], "source": "s", "cells": 3}
    (out / "experiment.json").write_text(json.dumps(record))
    write_experiment(load_config("demo"), out)
    records = read_experiments(out)
    assert set(records) == {"table1_vgg16", "demo"}
    assert records["table1_vgg16"]["description"] == "x" and records["table1_vgg16"]["cell_ids"] == []
    assert records["demo"]["cell_ids"] == sorted(c.id for c in expand_grid(load_config("demo")))
    with pytest.raises(ValueError, match="demo, table1_vgg16.*--config"):
        select_experiment(out)


def test_a_config_name_recorded_with_another_grid_is_refused(tmp_path):
    """The same name with a different grid would make one cited table out of two grids: refused before anything
    runs, naming the record's file and how the grids differ."""
    import json

    from click.testing import CliRunner

    from benchmark.cli import main
    out = tmp_path / "results"
    (out / "experiments").mkdir(parents=True)
    ids = sorted(c.id for c in expand_grid(load_config("demo")))
    record = {"name": "demo", "description": "x", "reference": [], "source": "old.toml", "cells": len(ids) - 1,
              "cell_ids": ids[1:] + ["tinyvgg-full-prune-l1-r90-s0-00000000"]}
    (out / "experiments" / "demo.json").write_text(json.dumps(record))
    res = CliRunner().invoke(main, ["run", "demo", "--out", str(out), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2, res.output
    msg = " ".join(res.output.split())
    assert str(out / "experiments" / "demo.json") in msg and "another grid" in msg, msg
    assert f"1 of its {len(ids)} cells are not in benchmark/configs/demo.toml" in msg, msg
    assert f"1 of the {len(ids)} cells of benchmark/configs/demo.toml are not in it (e.g. {ids[0]})" in msg, msg
    assert json.loads((out / "experiments" / "demo.json").read_text()) == record  # untouched
    assert sorted(p.name for p in out.iterdir()) == ["experiments"]  # no cell was started


def test_baseline_without_finetuning_has_q_zero():
    c = cfg([{"criterion": ["l1"], "ratio": [0.5]}], baseline={"unpruned": True, "finetune": False}, base={"q": 5.0})
    base = [x for x in expand_grid(c) if x.is_baseline]
    pruned = [x for x in expand_grid(c) if not x.is_baseline]
    assert [b.loop_dict["q"] for b in base] == [0.0] and pruned[0].loop_dict["q"] == 5.0


def test_published_tables_keep_the_papers_digits():
    """Reference rows are strings as printed in the paper (001): Table 2's four decimals and Table 7's
    ``0.47``/``0.4345`` used to be re-rounded to three decimals (0.6759 shown as 0.676)."""
    from benchmark import formats
    from benchmark.reference import REFERENCES, reference_tables

    for t in reference_tables():
        assert all(len(r) == len(t["header"]) for r in t["rows"]), t["key"]
    cell = {(k, r[0]): r[1:] for k, t in REFERENCES.items() for r in t["rows"]}
    assert cell["paper_table2", "l1-norm"] == ["0.6759"] and cell["paper_table2", "Random"] == ["0.6701"]
    assert cell["paper_table7", "Entropy"] == ["0.642", "0.578", "0.47"]
    assert cell["paper_table7", "Sensitivity"] == ["0.637", "0.576", "0.4345"]
    assert cell["paper_table1", "Random"] == ["0.650", "0.569", "0.415"]  # trailing zeros kept
    md = formats.to_markdown({"tables": [], "overall": [], "runs": []}, references=("paper_table2",))
    assert "| l1-norm | 67.59 |" in md and "| APoZ | 67.06 |" in md  # shown in percent, as our tables
