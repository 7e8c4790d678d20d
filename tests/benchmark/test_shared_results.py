"""One results folder, several configs: cells two configs share are computed once, every config keeps its
own record (concurrent writers included), and each leaderboard shows its own config's cells only."""
import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.report import render
from benchmark.config import parse_config
from benchmark.grid import expand_grid
from benchmark.leaderboard import build_leaderboard
from benchmark.runner import read_experiments, record_path, select_experiment, write_experiment
from conftest import cli
from imagenet52p.classes import load_class_set
from imagenet52p.fake import FakeSpec, make_fake_imagenet

COMMON = """
[data]
full = "full"
image_size = 24
resize = 24
train_scale_min = 0.7
latency_batch_size = 2
num_workers = 0

[model]
name = "tinyvgg"
weights = "none"

[base]
layers = "all"
p = 0.5
q = 1.0
lr = 0.01
batch_size = 16

[baseline]
unpruned = false
"""
# shared_a: random and l1 at 50%; shared_b: l1 at 25% and 50%.  The l1-50% cell is the same cell in both.
CONFIG_A = 'name = "shared_a"\ndescription = "config A"\nreference = ["paper_table1"]\n' + COMMON + \
    '\n[[grid]]\ncriterion = ["random", "l1"]\nratio = [0.5]\n'
CONFIG_B = 'name = "shared_b"\ndescription = "config B"\nreference = ["paper_table2"]\n' + COMMON + \
    '\n[[grid]]\ncriterion = ["l1"]\nratio = [0.25, 0.5]\n'


def bench(*args):
    return subprocess.run([cli("imagenet52p-bench"), *map(str, args)], capture_output=True, text=True)


def _ids(text: str, source: str) -> list[str]:
    import tomllib
    return sorted(c.id for c in expand_grid(parse_config(tomllib.loads(text), source)))


def build_full(root: Path) -> None:
    """``root/data/full``: a 4-class build of a synthetic tree (the cells of :data:`COMMON` read it)."""
    from imagenet52p.builder import BuildConfig, build_dataset

    wnids = sorted(load_class_set("imagenet52p").wnids[:4])
    make_fake_imagenet(root / "tree", wnids, FakeSpec(train_per_class=8, val_per_class=4, width=32, height=24))
    lst = root / "full.txt"
    lst.write_text("\n".join(wnids) + "\n")
    build_dataset(BuildConfig(root=root / "tree", out=root / "data" / "full", classes=str(lst), val_per_class=2,
                              seed=0, shard_size=40, eval_shard_size=20, workers=1, progress=False))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Build a 4-class set, run config A then config B into the same folder."""
    root = tmp_path_factory.mktemp("shared")
    build_full(root)
    (root / "a.toml").write_text(CONFIG_A)
    (root / "b.toml").write_text(CONFIG_B)
    results = root / "results"
    run = ["--out", results, "--data-root", root / "data", "--device", "cpu", "--no-progress", "--threads", "1"]
    first = bench("run", root / "a.toml", *run)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    ids_a, ids_b = _ids(CONFIG_A, "a.toml"), _ids(CONFIG_B, "b.toml")
    (common,) = set(ids_a) & set(ids_b)
    cell = results / common
    before = {"summary": (cell / "summary.json").stat().st_mtime_ns, "events": (cell / "events.jsonl").read_bytes(),
              "files": sorted(str(p.relative_to(cell)) for p in cell.rglob("*"))}
    second = bench("run", root / "b.toml", *run)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    return {"root": root, "results": results, "run": run, "ids_a": ids_a, "ids_b": ids_b, "common": common,
            "before": before, "second": second}


def test_a_shared_cell_is_computed_once(shared):
    results, cell = shared["results"], shared["results"] / shared["common"]
    assert "shared_b task 0/1: 2 done" in shared["second"].stdout
    assert (cell / "summary.json").stat().st_mtime_ns == shared["before"]["summary"]  # not run again
    assert (cell / "events.jsonl").read_bytes() == shared["before"]["events"]
    assert sorted(str(p.relative_to(cell)) for p in cell.rglob("*")) == shared["before"]["files"]
    runs = sorted(p.parent.name for p in results.glob("*/cell.json"))
    assert runs == sorted(set(shared["ids_a"]) | set(shared["ids_b"])) and len(runs) == 3


def test_each_config_keeps_its_record_with_its_cell_ids(shared):
    records = read_experiments(shared["results"])
    assert set(records) == {"shared_a", "shared_b"}
    assert records["shared_a"]["cell_ids"] == shared["ids_a"] and records["shared_b"]["cell_ids"] == shared["ids_b"]
    assert records["shared_a"]["description"] == "config A" and records["shared_b"]["reference"] == ["paper_table2"]
    assert record_path(shared["results"], "shared_a") == shared["results"] / "experiments" / "shared_a.json"
    assert not (shared["results"] / "experiment.json").exists()


def test_each_leaderboard_shows_its_own_configs_cells(shared):
    results = shared["results"]
    for name, ids, criteria, ratios, ref in (("shared_a", shared["ids_a"], ["l1", "random"], [0.5], "Table 1"),
                                             ("shared_b", shared["ids_b"], ["l1"], [0.25, 0.5], "Table 2")):
        proc = bench("leaderboard", results, "--config", name, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        board = json.loads(proc.stdout)
        assert sorted(r["id"] for r in board["runs"]) == ids
        (table,) = board["tables"]
        assert table["criteria"] == criteria and table["ratios"] == ratios
        assert board["experiment"]["name"] == name and "cell_ids" not in board["experiment"]
        assert [r["title"] for r in board["reference"]][0].startswith(f"Paper {ref}"), board["reference"][0]["title"]
        assert render(results, "md", config=name).startswith(f"# Leaderboard: {name}\n")
    assert "(rank − 1)/(k − 1)" in render(results, "md", config="shared_a")  # l1 and random: one ranked column
    everything = build_leaderboard(results)  # one scan of the folder, rendered per config (as scripts/demo.py)
    assert len(everything["runs"]) == 3
    assert sorted(r["id"] for r in json.loads(render(results, "json", board=everything, config="shared_b"))["runs"]) \
        == shared["ids_b"]
    assert render(results, "overall-csv", config="shared_b").splitlines() == [
        "rank,criterion,norm_rank,columns,wins,beats_random,random_columns,vs_random,vs_random_std,vs_random_se,"
        "vs_random_n,vs_random_unpaired,mean_top1,mean_damage"]  # one criterion per column: nothing to rank


def test_several_configs_and_no_config_is_a_usage_error_listing_them(shared):
    proc = bench("leaderboard", shared["results"])
    assert proc.returncode == 2, proc.stdout
    assert "shared_a, shared_b" in proc.stderr and "--config" in proc.stderr
    res = CliRunner().invoke(main, ["leaderboard", str(shared["results"]), "--config", "nope"])
    assert res.exit_code == 2 and "'nope'" in res.output and "shared_a, shared_b" in res.output, res.output


def test_a_rerun_of_a_config_reuses_everything(shared):
    results = shared["results"]
    before = {p: p.stat().st_mtime_ns for p in results.glob("*/summary.json")}
    again = bench("run", shared["root"] / "a.toml", *shared["run"])
    assert again.returncode == 0 and "2 done" in again.stdout, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in results.glob("*/summary.json")} == before
    assert set(read_experiments(results)) == {"shared_a", "shared_b"}


def _cfg(i: int):
    return parse_config({"name": f"c{i % 4}", "data": {"full": "f"}, "model": {"name": "tinyvgg"},
                         "baseline": {"unpruned": False}, "grid": [{"criterion": ["l1"], "ratio": [0.5],
                                                                    "seed": [i % 4]}]}, f"c{i % 4}.toml")


def _write(args):
    i, out = args
    write_experiment(_cfg(i), Path(out))


def test_concurrent_writers_of_several_configs_keep_every_record(tmp_path):
    """Eight processes (four configs, each twice) record into one folder at the same time."""
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.map(_write, [(i, str(tmp_path)) for i in range(8)])
    records = read_experiments(tmp_path)
    assert sorted(records) == ["c0", "c1", "c2", "c3"]
    for i in range(4):
        assert records[f"c{i}"]["cell_ids"] == [c.id for c in expand_grid(_cfg(i))]


def test_an_old_single_record_is_read_as_one_and_moved_when_another_config_runs(tmp_path):
    legacy = {"name": "table1_vgg16", "description": "x", "reference": ["paper_table1"], "source": "s", "cells": 3}
    (tmp_path / "experiment.json").write_text(json.dumps(legacy))
    (tmp_path / "old-cell").mkdir()
    (tmp_path / "old-cell" / "cell.json").write_text("{}")
    assert select_experiment(tmp_path) == legacy  # one record: the leaderboard's, all cells (no cell_ids)
    write_experiment(_cfg(1), tmp_path)
    records = read_experiments(tmp_path)
    assert set(records) == {"table1_vgg16", "c1"} and not (tmp_path / "experiment.json").exists()
    assert records["table1_vgg16"]["cell_ids"] == ["old-cell"] and records["table1_vgg16"]["description"] == "x"
    with pytest.raises(ValueError, match="c1, table1_vgg16"):
        select_experiment(tmp_path)
    assert select_experiment(tmp_path, "c1")["cell_ids"] == [c.id for c in expand_grid(_cfg(1))]
