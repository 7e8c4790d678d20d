"""What a criterion scores on, in class-subset cells (paper sec. 3.3.5 vs 3.3.7): ``sensitivity`` averages
over all the training data of the starting model (every class it was trained on, full classifier),
``class_specific`` over only the subset's images; the two are different measurements, on real builds."""
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_runs import run_doc  # noqa: E402

from benchmark.config import parse_config  # noqa: E402
from benchmark.resolve import build_classes as _classes  # noqa: E402
from benchmark.grid import expand_grid  # noqa: E402
from benchmark.leaderboard import build_leaderboard  # noqa: E402
from pruning.loop import FullHead, make_model, restrict_classifier  # noqa: E402

DOC = {
    "name": "scoring",
    "data": {"full": "full", "sub": "sub", "image_size": 24, "resize": 24, "latency_batch_size": 2},
    "model": {"name": "tinyvgg", "weights": "pretrain"},
    "pretrain": {"epochs": 2, "lr": 0.05, "batch_size": 16},
    "base": {"layers": "all", "p": 0.0, "q": 0.0, "lr": 0.01, "batch_size": 16},
    "baseline": {"unpruned": False},
    "grid": [{"criterion": ["sensitivity", "class_specific", "mean_activation"], "ratio": [0.5],
              "class_set": "sub", "head": "restrict"},
             {"criterion": ["sensitivity"], "ratio": [0.5], "class_set": "sub", "score_data": "subset",
              "score_head": "cell"}],
}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return run_doc(tmp_path_factory.mktemp("scoring"), DOC, "scoring.toml")


def _cells(cfg):
    return {(c.criterion, c.score_data, c.score_head): c for c in expand_grid(cfg)}


def _summary(results, cell):
    return json.loads((results / cell.id / "summary.json").read_text())


def test_defaults_follow_the_papers_definitions(done):
    cfg, _, counts, _ = done
    assert counts["done"] == 4 and counts["failed"] == 0
    assert set(_cells(cfg)) == {("sensitivity", "full", "full"), ("class_specific", "subset", "full"),
                                ("mean_activation", "full", None), ("sensitivity", "subset", "cell")}


def test_sensitivity_and_class_specific_give_different_plans_on_the_subset(done):
    cfg, results, _, data = done
    cells = _cells(cfg)
    sens = _summary(results, cells[("sensitivity", "full", "full")])
    spec = _summary(results, cells[("class_specific", "subset", "full")])
    full_train = json.loads((data / "full" / "manifest.json").read_text())["splits"]["train"]["num_samples"]
    sub_train = json.loads((data / "sub" / "manifest.json").read_text())["splits"]["train"]["num_samples"]
    assert full_train == 2 * sub_train
    # sensitivity: every training image of the 6 classes the model was trained on; class_specific: the 3 subset's
    assert [st["score_images"] for st in sens["steps"]] == [full_train] * len(sens["steps"])
    assert [st["score_images"] for st in spec["steps"]] == [sub_train] * len(spec["steps"])
    assert sens["plan"] != spec["plan"]
    # the subset's labels in the full classifier's space: their positions in the full build
    full_set, sub_set = _classes(data / "full"), _classes(data / "sub")
    assert spec["config"]["score_classes"] == [full_set.wnid_to_idx[w] for w in sub_set.wnids]
    # the same loss on the same images as the model's own (restricted) head differs again
    own = _summary(results, cells[("sensitivity", "subset", "cell")])
    assert [st["score_images"] for st in own["steps"]] == [sub_train] * len(own["steps"])


def test_scoring_data_and_loss_are_part_of_the_identity_and_the_provenance(done):
    cfg, results, _, _ = done
    cells = _cells(cfg)
    a, b = cells[("sensitivity", "full", "full")], cells[("sensitivity", "subset", "cell")]
    assert a.hash != b.hash
    for cell in (a, b):
        doc = json.loads((results / cell.id / "cell.json").read_text())
        assert (doc["cell"]["score_data"], doc["cell"]["score_head"]) == (cell.score_data, cell.score_head)
    runs = {r["id"]: r for r in build_leaderboard(results)["runs"]}
    assert (runs[a.id]["score_data"], runs[a.id]["score_head"]) == ("full", "full")
    assert (runs[b.id]["score_data"], runs[b.id]["score_head"]) == ("subset", "cell")


def test_impossible_scoring_settings_are_refused_with_the_key():
    bad = {**DOC, "grid": [{"criterion": ["sensitivity"], "ratio": [0.5], "class_set": "sub",
                            "score_data": "full", "score_head": "cell"}]}
    with pytest.raises(ValueError, match=r"bad.toml: .*score_data = \"full\" with score_head = \"cell\""):
        expand_grid(parse_config(bad, "bad.toml"))
    bad = {**DOC, "grid": [{"criterion": ["sensitivity"], "ratio": [0.5], "class_set": "sub", "score_data": "all"}]}
    with pytest.raises(ValueError, match="score_data='all' is not one of full, subset"):
        parse_config(bad, "bad.toml")


def test_full_head_scores_like_the_unrestricted_model():
    """At the start, a restricted model with its FullHead swapped in computes exactly the original 1000-way
    model's logits and loss gradients (the subset rows are the model's own, shared, not copies)."""
    torch.manual_seed(0)
    full = make_model("tinyvgg", 10, seed=0).eval()
    rows = [7, 2, 5]
    small = restrict_classifier(make_model("tinyvgg", 10, seed=0), rows).eval()
    head = FullHead.of(make_model("tinyvgg", 10, seed=0), rows)
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 3, 7, 9, 2, 5])
    with head.applied(small):
        logits = small(x)
        assert torch.allclose(logits, full(x), atol=1e-6)
        g_small = torch.autograd.grad(F.cross_entropy(small(x), y), small.features[0].weight)[0]
        # the swapped head's current rows are the model's own parameters
        assert small.classifier[3].current.weight is small.get_submodule("classifier.3").current.weight
    g_full = torch.autograd.grad(F.cross_entropy(full(x), y), full.features[0].weight)[0]
    assert torch.allclose(g_small, g_full, atol=1e-6)
    assert small.classifier[3].out_features == 3  # restored after the block
    with pytest.raises(ValueError, match="4 outputs and 64 inputs"):
        with FullHead.of(make_model("tinyvgg", 10), [0, 1, 2, 3]).applied(small):
            pass


def test_two_scoring_settings_of_one_criterion_are_two_rows_never_averaged(done):
    cfg, results, _, _ = done
    cells = _cells(cfg)
    board = build_leaderboard(results)
    (table,) = board["tables"]
    rows = {e["criterion"]: e for e in table["entries"]}
    assert set(rows) == {"sensitivity [full/full]", "sensitivity [subset/cell]", "class_specific",
                         "mean_activation"}
    for setting, cell in (("full/full", cells[("sensitivity", "full", "full")]),
                          ("subset/cell", cells[("sensitivity", "subset", "cell")])):
        e = rows[f"sensitivity [{setting}]"]
        assert e["ids"] == [cell.id] and e["n"] == 1
        assert e["top1"] == _summary(results, cell)["test"]["top1"]


def test_a_folder_computed_on_other_class_lists_is_not_reused(done, tmp_path):
    """A cell's id names its class sets, not their contents: a results folder whose cells record another
    class list than the builds now hold is refused before anything runs, naming the folder and the build."""
    import shutil

    from benchmark.execute import CellEnv
    from benchmark.runner import run_grid
    cfg, results, _, data = done
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    cell = _cells(cfg)[("class_specific", "subset", "full")]
    doc = json.loads((copy / cell.id / "cell.json").read_text())
    assert doc["full_class_sha256"] and doc["class_sha256"]
    doc["full_class_sha256"] = "0" * 64  # as if computed when [data] full was another build
    (copy / cell.id / "cell.json").write_text(json.dumps(doc))
    summary = (copy / cell.id / "summary.json").read_bytes()
    with pytest.raises(ValueError, match=f"{cell.id} was computed on another class list for 'full'"):
        run_grid(cfg, CellEnv(results_dir=str(copy), data_root=str(data), device="cpu"))
    assert (copy / cell.id / "summary.json").read_bytes() == summary


def test_a_global_batch_that_does_not_split_over_the_gpus_is_refused_before_any_work(done, tmp_path):
    from benchmark.execute import CellEnv
    from benchmark.runner import run_grid
    cfg, _, _, data = done
    out = tmp_path / "nothing"
    with pytest.raises(ValueError, match=r"scoring.toml: cell .* with --nproc-per-node 3: batch_size=16 is the "
                                         r"global batch"):
        run_grid(cfg, CellEnv(results_dir=str(out), data_root=str(data), device="cpu"), nproc_per_node=3)
    assert not out.exists() or not any(out.iterdir())  # nothing written: no record, no pretraining


def test_a_layer_protocol_that_prunes_the_classifiers_inputs_is_refused_before_the_run():
    from benchmark.execute import _check_classifier_input_kept
    doc = {**DOC, "model": {"name": "resnet18", "weights": "pretrain"},
           "grid": [{"criterion": ["sensitivity"], "ratio": [0.5], "class_set": "sub", "layers": ["all", "resnet50-16"]}]}
    cells = {c.loop_config.layers: c for c in expand_grid(parse_config(doc, "r18.toml"))}
    model, example = make_model("resnet18", 6, seed=0), torch.zeros(1, 3, 32, 32)
    _check_classifier_input_kept(model, cells["resnet50-16"], cells["resnet50-16"].loop_config, example)
    with pytest.raises(ValueError, match=r"pruning 'all' shrinks the inputs of the classifier 'fc' \(512 -> 256\)"):
        _check_classifier_input_kept(model, cells["all"], cells["all"].loop_config, example)
