"""The one run path (benchmark.data + benchmark.run) that `imagenet52p prune` and every grid cell share:
the head vocabulary on real class lists, and a grid cell using the head only the single-run command had."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_kinds import DOC as KINDS  # noqa: E402
from test_bench_runs import run_doc  # noqa: E402

from benchmark.data import HEADS, choose_head  # noqa: E402
from benchmark.grid import expand_grid  # noqa: E402
from imagenet52p.classes import imagenet1k_set, load_class_set  # noqa: E402


def test_one_head_vocabulary_for_grids_and_the_prune_command():
    from benchmark import config, prune_cli
    assert config.HEADS == HEADS == prune_cli.HEADS.choices == ("full", "restrict", "subset-logits")


def test_choose_head_on_real_class_lists():
    in1k, in52 = imagenet1k_set(), load_class_set("imagenet52p")
    rows = in52.imagenet1k_indices
    # data = an ImageNet-52P build, model = a 1000-way classifier
    h = choose_head("restrict", in52.wnids, in1k.wnids)
    assert h.restrict_rows == rows and h.target is None and h.keep == tuple(range(52)) and h.num_labels == 52
    h = choose_head("full", in52.wnids, in1k.wnids)
    assert [h.target(j) for j in range(52)] == rows and h.keep is None and h.num_labels == 1000
    assert h.model_rows == rows
    h = choose_head("subset-logits", in52.wnids, in1k.wnids)
    assert h.logit_subset == rows and h.keep == tuple(rows) and [h.target(j) for j in range(52)] == rows
    # data = the 1000 classes, the run's classes = ImageNet-52P: other labels become -1 (dropped by `classes`)
    h = choose_head("restrict", in1k.wnids, in1k.wnids, in52.wnids)
    assert h.restrict_rows == rows and h.target(rows[7]) == 7 and h.target(next(i for i in range(1000)
                                                                               if i not in rows)) == -1
    # the data's own label space: no mapping at all
    h = choose_head("full", in52.wnids)
    assert h.target is None and h.num_labels == 52 and h.keep is None
    with pytest.raises(ValueError, match="not classes of the starting model"):
        choose_head("restrict", in1k.wnids[:10], in1k.wnids[:5])
    with pytest.raises(ValueError, match="head='sideways'"):
        choose_head("sideways", in52.wnids)


DOC = {**KINDS, "name": "heads",  # the builds, model and loop options of test_bench_kinds, other cells
       "grid": [{"head": ["subset-logits", "restrict"], "criterion": ["taylor"], "ratio": [0.5], "class_set": "sub"}]}


def test_a_grid_cell_can_use_subset_logits(tmp_path):
    """head = "subset-logits" in a grid (before the one run path only `imagenet52p prune` had it): the model
    keeps the full build's 6 outputs, trains on them, and is evaluated by the arg-max over the 3 subset
    classes' logits; its scoring loss is over the full classifier (its own)."""
    from benchmark.data import Transforms, open_split
    from benchmark.resolve import build_classes
    from pruning import load_pruned
    from pruning.loop import evaluate, make_model
    from pruning.loop.data import DataStream
    from pruning.loop.train import Runtime
    from imagenet52p import transforms as T

    cfg, results, counts, data = run_doc(tmp_path, DOC, "heads.toml")
    assert counts["done"] == 2 and counts["failed"] == 0
    cells = {c.head: c for c in expand_grid(cfg)}
    assert (cells["subset-logits"].score_data, cells["subset-logits"].score_head) == ("full", "full")
    full, sub = build_classes(data / "full"), build_classes(data / "sub")
    rows = [full.wnid_to_idx[w] for w in sub.wnids]
    run = results / cells["subset-logits"].id
    model = load_pruned(lambda: make_model("tinyvgg", 6), run / "model")
    assert model.classifier[-1].out_features == 6  # not restricted
    restricted = load_pruned(lambda: make_model("tinyvgg", 3), results / cells["restrict"].id / "model")
    assert restricted.classifier[-1].out_features == 3
    summary = json.loads((run / "summary.json").read_text())
    # the run's recorded test top-1 is the subset arg-max on the sub build's labels mapped into the full space
    test = open_split(data / "sub", "test", "test", 16, 0, Transforms(24, 24), 0, target_map=None)
    rt = Runtime.create("cpu")
    rt.normalize = T.Normalize()
    xs, ys = [], []
    for x, y in test:
        xs.append(x)
        ys.append(torch.tensor([rows[int(t)] for t in y]))
    stream = DataStream(torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys)), 16, shuffle=False)
    got = evaluate(model, stream, rt, logit_subset=rows)
    assert got["top1"] == pytest.approx(summary["test"]["top1"], abs=1e-9)
    unrestricted = evaluate(model, stream, rt)  # the 6-way arg-max can only be worse or equal
    assert unrestricted["top1"] <= got["top1"]


def test_full_head_scoring_labels_are_the_full_classifiers_even_where_they_are_0_to_k(tmp_path):
    """A head = "full" cell scores with labels of the full classifier (its own).  On a subset build holding
    the full build's first 3 classes those rows happen to be 0, 1, 2: the cell's class_specific labels are
    still mapped (and recorded in its config), as before the one run path, so its run hash is unchanged."""
    from benchmark.config import parse_config
    from benchmark.resolve import CellEnv, build_classes
    from benchmark.runner import run_grid
    from imagenet52p.builder import BuildConfig, build_dataset
    from test_bench_runs import make_builds

    data = make_builds(tmp_path)
    first = build_classes(data / "full").wnids[:3]
    lst = tmp_path / "pre.txt"
    lst.write_text("\n".join(first) + "\n")
    build_dataset(BuildConfig(root=tmp_path / "tree", out=data / "pre", classes=str(lst), val_per_class=3, seed=0,
                              shard_size=40, eval_shard_size=20, workers=1, progress=False))
    doc = {**KINDS, "name": "pre", "data": {**KINDS["data"], "pre": "pre"},
           "grid": [{"head": "full", "criterion": "class_specific", "ratio": 0.5, "class_set": "pre",
                     "classes": [[0, 1]]}]}
    cfg = parse_config(doc, "pre.toml")
    counts = run_grid(cfg, CellEnv(results_dir=str(tmp_path / "results"), data_root=str(data), device="cpu"))
    assert counts["done"] == 1
    (cell,) = expand_grid(cfg)
    summary = json.loads((tmp_path / "results" / cell.id / "summary.json").read_text())
    assert summary["config"]["score_classes"] == [0, 1]
