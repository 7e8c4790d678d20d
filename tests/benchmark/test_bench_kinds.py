"""The cell kinds beyond plain Algorithm 1, on real builds: the pruned architecture and a uniformly
reduced network trained from scratch (Crowley et al.), a starting model trained from scratch on
the subset (Hubens et al.), and a subset evaluated with the full classifier (head="full")."""
import json
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_bench_runs import make_builds, run_doc  # noqa: E402

from benchmark.config import parse_config  # noqa: E402
from benchmark.execute import CellEnv  # noqa: E402
from benchmark.grid import expand_grid  # noqa: E402
from benchmark.leaderboard import build_leaderboard  # noqa: E402
from benchmark.runner import run_grid  # noqa: E402

DOC = {
    "name": "kinds",
    "data": {"full": "full", "sub": "sub", "image_size": 24, "resize": 24, "latency_batch_size": 2},
    "model": {"name": "tinyvgg", "weights": "pretrain"},
    "pretrain": {"epochs": 2, "lr": 0.05, "batch_size": 16},
    "base": {"layers": "all", "p": 0.25, "q": 1.0, "lr": 0.01, "batch_size": 16, "score_images": 16},
    "baseline": {"unpruned": False},
    "grid": [
        {"kind": ["scratch", "reduced"], "criterion": "l1", "ratio": [0.5], "class_set": "sub"},
        {"init": ["scratch"], "criterion": ["l1"], "ratio": [0.5], "class_set": "sub"},
        {"head": ["full"], "criterion": ["random"], "ratio": [0.5], "class_set": "sub"},
        {"criterion": ["l1"], "ratio": [0.5], "class_set": "sub", "data_fraction": [0.5, 1.0]},
        {"criterion": ["class_specific"], "ratio": [0.5], "class_set": "sub"},
    ],
}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    cfg, results, counts, _ = run_doc(tmp_path_factory.mktemp("kinds"), DOC, "kinds.toml")
    return cfg, results, counts


def _summ(results, cell):
    return json.loads((results / cell.id / "summary.json").read_text())


def test_every_kind_completes(done):
    cfg, results, counts = done
    assert counts == {"done": 7, "failed": 0, "partial": 0, "pending": 0}


def test_class_specific_scores_on_the_class_sets_images(done):
    cfg, results, _ = done
    cell = next(c for c in expand_grid(cfg) if c.criterion == "class_specific")
    s = _summ(results, cell)
    # every class of the 3-class subset build, as labels of the full classifier the scoring loss uses
    # (score_head = "full"): their positions in the 6-class full build
    from benchmark.resolve import build_classes as _classes
    data = results.parent / "data"
    full, sub = _classes(data / "full"), _classes(data / "sub")
    assert (cell.score_data, cell.score_head) == ("subset", "full")
    assert s["config"]["score_classes"] == [full.wnid_to_idx[w] for w in sub.wnids] != [0, 1, 2]
    assert all(st["score_images"] == 16 for st in s["steps"])  # score_images = 16


def test_scratch_and_reduced_train_a_thinner_network_from_random_init(done):
    cfg, results, _ = done
    cells = {c.kind: c for c in expand_grid(cfg) if c.kind != "prune"}
    for kind, cell in cells.items():
        s = _summ(results, cell)
        bench = json.loads((results / cell.id / "latency.json").read_text())
        assert s["steps"] == []  # no layer step: the architecture was reduced before training
        assert s["baseline"]["params"] < bench["params_full"]  # thinner than tinyvgg
        assert s["cost"]["macs"] == s["baseline"]["macs"]
        # trained from random init: accuracy starts at chance on 3 classes
        assert s["baseline"]["val"]["top1"] < 0.7
    # with layers="all" the pruned architecture and the uniformly reduced one coincide
    a, b = (_summ(results, cells[k])["baseline"]["params"] for k in ("scratch", "reduced"))
    assert a == b
    board = build_leaderboard(results)
    rows = [e for t in board["tables"] if t["kind"] != "prune" for e in t["entries"]]
    assert len(rows) == 2 and all(0.3 < e["macs_reduction"] < 1 for e in rows)


def test_scratch_init_starts_from_a_model_trained_on_the_subset_only(done):
    cfg, results, _ = done
    cell = next(c for c in expand_grid(cfg) if c.kind == "prune" and c.init == "scratch")
    pre = list((results / "_pretrain").glob("tinyvgg-sub-*/summary.json"))
    assert len(pre) == 1
    s = _summ(results, cell)
    assert json.loads(pre[0].read_text())["final"]["val"]["top1"] == pytest.approx(s["baseline"]["val"]["top1"])


def test_full_head_keeps_every_output(done):
    cfg, results, _ = done
    full = next(c for c in expand_grid(cfg) if c.head == "full")
    restricted = next(c for c in expand_grid(cfg) if c.kind == "prune" and c.init == "scratch")
    assert full.class_set == restricted.class_set == "sub"
    s_full, s_res = _summ(results, full), _summ(results, restricted)
    # 6 outputs x 64 hidden units + bias vs 3 outputs: the classifier of the full head is larger
    assert s_full["baseline"]["params"] - s_res["baseline"]["params"] == 3 * 64 + 3


def test_data_fraction_tables_and_figure_1d(done):
    from benchmark.plots import figure1d
    cfg, results, _ = done
    board = build_leaderboard(results)
    fr = [t for t in board["tables"] if json.loads(t["key"])["cell"] == {
        "model": "tinyvgg", "class_set": "sub", "kind": "prune", "init": "pretrained", "head": "restrict"}]
    assert sorted(t["label"].split("data_fraction=")[1].split(" ")[0] for t in fr) == ["0.5", "1.0"]
    imgs = {t["label"]: t["entries"][0]["images_finetune"] for t in fr}
    small, big = sorted(imgs.values())
    assert small < big  # half the training data is used
    figs = figure1d(board)
    assert len(figs) == 1 and figs[0][1].startswith(b"\x89PNG")


@pytest.mark.heavy
def test_cells_under_torchrun_with_two_processes(tmp_path):
    """--nproc-per-node 2: every cell runs under torchrun (Gloo on CPU); metrics cover every test image once."""
    import subprocess

    from test_bench_runs import CONFIG

    data = make_builds(tmp_path)
    cfg = CONFIG.split("[[grid]]")[0].replace('broken = "broken"\n', "") + \
        '[[grid]]\ncriterion = ["l1"]\nratio = [0.5]\nseed = [0]\n'
    (tmp_path / "t.toml").write_text(cfg)
    res = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", str(tmp_path / "t.toml"), "--out", str(res),
                           "--data-root", str(data), "--device", "cpu", "--no-progress", "--nproc-per-node", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(res.glob("tinyvgg-*/summary.json"))
    assert len(runs) == 2
    for p in runs:
        s = json.loads(p.read_text())
        assert s["world_size"] == 2
        assert s["test"]["images"] == 6 * 4  # 6 classes x 4 test images, each counted once over both ranks
        assert (p.parent / "latency.json").is_file()
        # batch_size is the global batch: each rank loads half of it, so an optimizer step is batch_size images
        bs = s["config"]["batch_size"]
        for st in s["steps"] + s["final"]["epochs"]:
            images = st.get("finetune_images", st.get("images"))
            assert st["optimizer_steps"] == -(-images // bs), (images, st["optimizer_steps"], bs)


def test_baseline_evaluated_without_finetuning_is_attached_to_its_table(done, tmp_path):
    _, results, _ = done
    doc = {**DOC, "baseline": {"unpruned": True, "finetune": False},
           "grid": [{"criterion": ["l1"], "ratio": [0.5], "class_set": "sub"}]}
    res = tmp_path / "res"
    counts = run_grid(parse_config(doc, "q0.toml"), CellEnv(results_dir=str(res), data_root=str(results.parent / "data"),
                                                             device="cpu"))
    assert counts["done"] == 2
    (t,) = build_leaderboard(res)["tables"]
    base = t["baseline"]
    s = json.loads((res / base["ids"][0] / "summary.json").read_text())
    assert s["final"]["epochs"] == [] and s["images"]["finetune_total"] == 0  # evaluated as it is
    assert base["top1"] == s["test"]["top1"]


def test_a_done_run_missing_its_latency_gets_it_on_the_next_run(done):
    cfg, results, _ = done
    cell = next(c for c in expand_grid(cfg) if c.criterion == "class_specific")
    bench = results / cell.id / "latency.json"
    summary = (results / cell.id / "summary.json").read_bytes()
    bench.unlink()
    counts = run_grid(cfg, CellEnv(results_dir=str(results), data_root=str(results.parent / "data"), device="cpu"))
    assert counts["done"] == 7 and bench.is_file()
    assert (results / cell.id / "summary.json").read_bytes() == summary  # the run itself was not redone
