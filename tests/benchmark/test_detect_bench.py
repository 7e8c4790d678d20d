"""Detection cells through the real runner and CLI: an upstream classification grid (tinyvgg on real builds)
run first, then a detection grid whose plug-in cells find its cells by hash, train tiny Faster R-CNNs on a
synthetic VOC tree, and a direct cell that prunes the trained baseline detector; leaderboard numbers against
the run directories, refusals that name the upstream cell, identity and estimate."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_bench_runs import make_builds

BENCH = [sys.executable, "-m", "benchmark.cli"]

UPSTREAM = """
name = "up"
[data]
full = "full"
image_size = 24
resize = 24
[model]
name = "tinyvgg"
weights = "none"
[base]
layers = "all"
p = 0.25
q = 0.5
lr = 0.01
batch_size = 16
score_images = 16
[[grid]]
criterion = ["l1"]
ratio = [0.5]
"""

DETECT = """
name = "det"
task = "detection"
reference = ["paper_table5", "paper_table6"]
[voc]
root = "VOCdevkit"
train = "2007-trainval"
test = "2007-test"
val_images = 4
[detector]
arch = "tinyvgg"
preset = "tiny"
[train]
iterations = 6
lr = 0.005
batch_size = 2
checkpoint_every = 3
eval_every = 3
select = "best"
[prune]
iters_per_layer = 1
final_iters = 2
batch_size = 2
lr = 0.005
[fps]
images = 2
warmup = 1
[upstream.up]
config = "{upstream}"
[[grid]]
kind = "plugin"
criterion = ["l1"]
ratio = [0.5]
[[grid]]
kind = "direct"
criterion = ["random"]
ratio = [0.5]
"""


def bench(args, **kw):
    return subprocess.run(BENCH + args, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    from imagenet52p.voc import make_fake_voc

    root = tmp_path_factory.mktemp("det")
    data = make_builds(root)
    (root / "up.toml").write_text(UPSTREAM)
    up_results = root / "up_results"
    proc = bench(["run", str(root / "up.toml"), "--out", str(up_results), "--data-root", str(data), "--device", "cpu",
                  "--no-progress", "--threads", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    make_fake_voc(root / "voc", years=("2007",), trainval=16, test=8, classes=("car", "dog", "person"), seed=0)
    (root / "det.toml").write_text(DETECT.format(upstream=root / "up.toml"))
    results = root / "results"
    args = ["run", str(root / "det.toml"), "--out", str(results), "--data", f"voc={root / 'voc'}",
            "--upstream", f"up={up_results}", "--device", "cpu", "--no-progress", "--threads", "1"]
    proc = bench(args)
    return {"root": root, "up_results": up_results, "results": results, "proc": proc, "args": args}


def _board(det) -> dict:
    proc = bench(["leaderboard", str(det["results"]), "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_cell_runs_and_the_leaderboard_reads_the_run_directories(det):
    assert det["proc"].returncode == 0, det["proc"].stderr[-4000:]
    board = _board(det)
    runs = {r["id"]: r for r in board["runs"]}
    assert len(runs) == 3 and all(r["state"] == "done" for r in runs.values())
    kinds = sorted((r["kind"], r["criterion"], r["ratio"]) for r in runs.values())
    assert kinds == [("direct", "random", 0.5), ("plugin", "l1", 0.5), ("plugin", "none", 0.0)]
    for r in runs.values():
        s = json.loads((det["results"] / r["id"] / "summary.json").read_text())
        assert r["map07"] == s["test"]["map07"] and r["map10"] == s["test"]["map10"]
        assert 0.0 <= r["map07"] <= 1.0 and r["fps"] > 0 and r["fps_base"] > 0
        assert r["gflops_base"] > 0 and r["predicted_speedup"] == pytest.approx(r["gflops_base"] / r["gflops"])
    tables = {t["kind"]: t for t in board["tables"]}
    assert set(tables) == {"plugin", "direct"} and all(t["metric"] == "map07" for t in tables.values())
    base = next(r for r in runs.values() if r["ratio"] == 0.0)
    assert base["gflops_reduction"] == pytest.approx(0.0, abs=1e-12)
    for t in tables.values():  # a direct table's baseline is the trained detector it pruned: the plug-in baseline
        assert t["baseline"]["ids"] == [base["id"]] and t["baseline"]["map07"] == base["map07"]
        (entry,) = t["entries"]
        run = runs[entry["ids"][0]]
        assert entry["map07"] == run["map07"] and entry["gflops_reduction"] == run["gflops_reduction"] > 0.1


def test_a_plugin_cell_trains_the_upstream_cells_pruned_backbone(det):
    from pruning import read_plan
    from pruning.detection.io import load_detector

    runs = {r["id"]: r for r in _board(det)["runs"]}
    cell = next(r for r in runs.values() if r["kind"] == "plugin" and r["ratio"] == 0.5)
    doc = json.loads((det["results"] / cell["id"] / "cell.json").read_text())
    up_id = doc["cell"]["upstream"]["cell"]
    up_plan = read_plan(det["up_results"] / up_id / "model")["plan"]
    detector = load_detector(det["results"] / cell["id"] / "train" / "detector")
    last = max(up_plan, key=lambda k: int(k.rsplit(".", 1)[1]))  # tinyvgg's last conv, features.<i>
    kept = len(up_plan[last])
    assert detector.backbone.get_submodule(last.split(".", 1)[1]).out_channels == kept < 64
    assert detector.roi_heads.box_head[0].in_features == kept * 2 * 2  # fc6 reads the kept channels x 2x2 RoIs


def test_formats_render_and_a_second_run_skips_every_cell(det):
    for fmt in ("md", "csv", "overall-csv", "html"):
        proc = bench(["leaderboard", str(det["results"]), "--format", fmt])
        assert proc.returncode == 0, proc.stderr
    md = bench(["leaderboard", str(det["results"])]).stdout
    assert "mAP (VOC07 11-point" in md and "Faster R-CNN (tinyvgg) on VOC" in md and "Paper Table 6" in md
    again = bench(det["args"])
    assert again.returncode == 0 and "3 done" in again.stdout, again.stdout + again.stderr


def test_an_upstream_cell_not_run_is_refused_naming_it_and_nothing_is_written(det, tmp_path):
    empty = tmp_path / "no_upstream"
    empty.mkdir()
    out = tmp_path / "results"
    args = [a for a in det["args"]]
    args[args.index("--out") + 1] = str(out)
    args[args.index("--upstream") + 1] = f"up={empty}"
    proc = bench(args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pending" in proc.stderr and "imagenet52p-bench run" in proc.stderr and "Traceback" not in proc.stderr
    from benchmark.config import load_config
    from benchmark.grid import expand_grid
    up_ids = {c.up_id for c in expand_grid(load_config(det["root"] / "det.toml"))}
    assert any(i in proc.stderr for i in up_ids)
    assert not out.exists()


def test_grid_fields_that_match_no_upstream_cell_are_refused(det, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DETECT.format(upstream=det["root"] / "up.toml").replace('criterion = ["l1"]', 'criterion = ["apoz"]'))
    proc = bench(["list", str(bad)])
    assert proc.returncode == 2 and "has no prune cell with criterion=apoz" in proc.stderr and "its criteria: l1, none" \
        in proc.stderr, proc.stderr


def test_identity_ignores_defaults_written_out_and_names_the_upstream_cell(det):
    from benchmark.config import load_config, parse_config
    from benchmark.grid import expand_grid
    import tomllib

    text = (det["root"] / "det.toml").read_text()
    a = expand_grid(load_config(det["root"] / "det.toml"))
    doc = tomllib.loads(text)
    doc["train"].update(momentum=0.9, weight_decay=5e-4, gamma=0.1)  # the defaults, written out
    b = expand_grid(parse_config(doc, "x"))
    assert [c.id for c in a] == [c.id for c in b]
    doc["train"]["lr"] = 0.004
    c = expand_grid(parse_config(doc, "x"))
    assert {x.id for x in c}.isdisjoint({x.id for x in a})
    plugin = next(x for x in a if x.kind == "plugin" and x.ratio == 0.5)
    assert plugin.identity()["cell"]["upstream"]["cell"] in {p.name for p in det["up_results"].iterdir()}


def test_estimate_counts_detection_cells_by_the_documented_formula(det):
    from benchmark.config import load_config
    from benchmark.estimate import estimate

    cfg = load_config(det["root"] / "det.toml")
    e = estimate(cfg, 10.0, 20.0, data_root=str(det["root"]), data={"voc": str(det["root"] / "voc")})
    n_train, n_test, n_val = 16, 8, 4
    layers = 4  # tinyvgg's convs
    trained = 2 * 6 * 2 + (layers * 1 + 2) * 2  # two plug-in cells, one direct (random: no scoring)
    fps = 2 * (1 + 2 * 1 * 2)  # 2 detectors x (warmup 1 + 2 passes x 1 repeat x 2 images)
    evals = 3 * (n_test + fps) + 2 * n_val * (6 // 3) + n_val * (layers + 2)  # test + fps; val (plug-in, direct)
    assert e["cells"] == 3 and e["train_images"] == trained and e["eval_images"] == evals
    assert e["gpu_hours"] == pytest.approx((trained / 10 + evals / 20) / 3600)
    assert e["train_images_voc"] == n_train
    proc = bench(["estimate", "table5"])
    assert proc.returncode == 0 and "table5: 66 cells" in proc.stdout, proc.stdout + proc.stderr
