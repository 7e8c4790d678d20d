"""The library's errors for bad input: weights files, checkpoints, config values, devices, and every check a
run passes before it writes anything (a refused run leaves no folder behind).  Real files and real runs; the
write failures (full disk, unwritable folder) are in ``test_errors_writes.py``."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import pruning
from benchmark.synthetic import synthetic_splits
from pruning.loop import LoopConfig, RunOptions, Stopped, make_model, prune_finetune
from pruning.loop.models import TinyVGG
from pruning.loop.train import Runtime

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = RunOptions(device="cpu", progress=False)
ADVICE = "weights_only=False"  # torch's advice for a refused pickle: never shown


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(3, 8, 4, 4, size=16, seed=0)


def _run(data, out, criterion="l1", ratio=0.5, model=None, options=QUIET, **kw):
    kw = {"layers": "all", "p": 0, "q": 1, "batch_size": 8, **kw}
    return prune_finetune(model or make_model("tinyvgg", 3, seed=0), criterion, ratio, train_data=data[0],
                          val_data=data[1], out_dir=out, options=options, **kw)


# ------------------------------------------------------------------ 1. weights files
def _bad_weights(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    pickled = tmp_path / "whole_model.pt"
    torch.save(make_model("tinyvgg", 3), pickled)  # a whole pickled module: refused by weights_only
    return {"text": text, "empty": empty, "pickled": pickled}


@pytest.mark.parametrize("kind", ["text", "empty", "pickled"])
def test_a_weights_file_that_is_not_a_state_dict_names_the_file_and_how_to_make_one(tmp_path, kind):
    path = _bad_weights(tmp_path)[kind]
    with pytest.raises(ValueError) as info:
        make_model("tinyvgg", 3, weights=path)
    msg = str(info.value)
    assert str(path) in msg and "torch.save(model.state_dict(), PATH)" in msg and "state_dict" in msg
    assert ADVICE not in msg and "will likely succeed" not in msg
    assert not isinstance(info.value, (EOFError, KeyError, pickle.UnpicklingError))


def test_weights_that_do_not_fit_or_are_not_a_mapping_are_value_errors(tmp_path):
    good = make_model("tinyvgg", 3, seed=0).state_dict()
    torch.save(make_model("tinyvgg", 5).state_dict(), tmp_path / "five.pt")  # shapes of another head
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"model": good, "epoch": 3}, tmp_path / "nested.pt")
    for name, match in [("five.pt", "size mismatch"), ("list.pt", "holds a list"), ("nested.pt", "Missing key")]:
        with pytest.raises(ValueError, match=match) as info:
            make_model("tinyvgg", 3, weights=tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    torch.save({"state_dict": good}, tmp_path / "wrapped.pt")  # still unwrapped, still loads
    m = make_model("tinyvgg", 3, weights=tmp_path / "wrapped.pt")
    assert all(torch.equal(m.state_dict()[k], v) for k, v in good.items())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        make_model("tinyvgg", 3, weights=tmp_path / "missing.pt")


def test_load_pruned_with_damaged_weights_names_the_file(tmp_path):
    model = make_model("tinyvgg", 3, seed=0)
    pruning.apply_plan(model, {"features.0": list(range(8))}, torch.zeros(1, 3, 16, 16))
    pruning.save_pruned(model, None, tmp_path / "m")
    (tmp_path / "m" / "state_dict.pt").write_text("garbage")
    with pytest.raises(ValueError, match="state_dict.pt cannot be read") as info:
        pruning.load_pruned(lambda: make_model("tinyvgg", 3), tmp_path / "m")
    assert ADVICE not in str(info.value)


# ------------------------------------------------------------------ 4. damaged or foreign checkpoints
def test_a_damaged_checkpoint_on_resume_names_the_file_and_says_delete_it(tmp_path, data):
    out = tmp_path / "run"
    with pytest.raises(Stopped):
        _run(data, out, options=RunOptions(device="cpu", progress=False, stop_after=1))
    last = out / "checkpoints" / "last.pt"
    whole = last.read_bytes()
    for damage in (whole[: len(whole) // 2], b"", b"not a checkpoint"):
        last.write_bytes(damage)
        with pytest.raises(ValueError) as info:
            _run(data, out, resume=True)
        msg = str(info.value)
        assert str(last) in msg and f"delete {last}" in msg and ADVICE not in msg
    last.unlink()  # what the message says: the run starts again from the beginning
    assert _run(data, out, resume=True)["plan"]


def test_a_checkpoint_of_another_run_is_refused_naming_both_runs(tmp_path, data):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(Stopped):
        _run(data, a, options=RunOptions(device="cpu", progress=False, stop_after=1))
    with pytest.raises(Stopped):
        _run(data, b, ratio=0.25, options=RunOptions(device="cpu", progress=False, stop_after=1))
    (a / "checkpoints" / "last.pt").write_bytes((b / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(ValueError, match="belongs to run") as info:
        _run(data, a, resume=True)
    msg = str(info.value)
    ha, hb = (json.loads((d / "config.json").read_text())["run_hash"] for d in (a, b))
    assert ha in msg and hb in msg and "--out" in msg and "delete" in msg


# ------------------------------------------------------------------ 2. validated before anything is written
@pytest.mark.parametrize("case, match", [
    (dict(layers=["features.0", "nope"]), "nope"),
    (dict(layers="resnet50-16"), "resnet50-16"),
    (dict(criterion="entropy", criterion_options={"bins": 0}), "bins=0"),
    (dict(criterion="entropy", criterion_options={"bins": "ten"}), "bins='ten'"),
    (dict(criterion="l1", criterion_options={"bins": 10}), "no option 'bins'"),
    (dict(criterion="class_specific"), "needs classes"),
    (dict(model_classes=2), "label 2"),
    (dict(image_size=4), "size 3x4x4"),
    (dict(device="foo"), "valid devices: cpu"),
])
def test_a_bad_run_is_refused_before_it_writes_anything(tmp_path, case, match):
    case = dict(case)
    data = synthetic_splits(3, 8, 4, 4, size=case.pop("image_size", 16), seed=0)
    model = make_model("tinyvgg", case.pop("model_classes", 3), seed=0)
    options = RunOptions(device=case.pop("device", "cpu"), progress=False)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        _run(data, out, model=model, options=options, **case)
    assert not out.exists()


def test_device_errors_list_the_valid_devices():
    for bad in ("foo", "meta"):
        with pytest.raises(ValueError, match="valid devices: cpu"):
            Runtime.create(bad)


# ------------------------------------------------------------------ 3. a failed start does not block
def test_a_folder_holding_only_a_failed_start_takes_the_corrected_run(tmp_path, data, caplog):
    out = tmp_path / "run"
    out.mkdir()  # what a start that died before its first checkpoint left (a run written before this check)
    (out / "config.json").write_text(json.dumps({"run_hash": "0123456789abcdef", "config": {}}))
    (out / "events.jsonl").write_text("")
    with caplog.at_level("WARNING", logger="pruning.loop.rundir"):
        s = _run(data, out)
    assert "failed start" in caplog.text and "0123456789abcdef" in caplog.text
    assert json.loads((out / "config.json").read_text())["run_hash"] == s["run_hash"]


def test_a_folder_with_progress_of_another_run_is_still_refused(tmp_path, data):
    out = tmp_path / "run"
    with pytest.raises(Stopped):
        _run(data, out, options=RunOptions(device="cpu", progress=False, stop_after=1))
    old = json.loads((out / "config.json").read_text())["run_hash"]
    with pytest.raises(ValueError, match="another configuration") as info:
        _run(data, out, ratio=0.25)
    msg = str(info.value)
    assert old in msg and str(out) in msg and "--out" in msg and "delete" in msg
    assert json.loads((out / "config.json").read_text())["run_hash"] == old  # untouched


# ------------------------------------------------------------------ 6. config values of the wrong type
@pytest.mark.parametrize("field, value", [
    ("p", "fast"), ("ratio", "0.5"), ("batch_size", 1.5), ("layers", 5), ("seed", True), ("q", None),
    ("nesterov", 1), ("lr", float("nan")), ("classes", "abc"), ("score_images", 2.5), ("order", 3),
])
def test_a_config_value_of_the_wrong_type_names_the_field_and_value(field, value):
    with pytest.raises(ValueError) as info:
        LoopConfig(**{"criterion": "l1", "ratio": 0.5, field: value})
    assert field in str(info.value) and repr(value) in str(info.value)


def test_accepted_config_values_still_work():
    import numpy as np

    c = LoopConfig("l1", np.float64(0.5), p=1, q=0, batch_size=np.int64(32), classes=[np.int64(1), 2],
                   final_lr=None, score_images=None, layers=["features.0"])
    assert (c.ratio, c.p, c.classes, c.layers) == (0.5, 1.0, (1, 2), ("features.0",))
    assert LoopConfig(None, 0).ratio == 0.0


@pytest.mark.parametrize("field, value", [("device", 5), ("num_workers", -1), ("num_workers", 1.5),
                                          ("progress", "yes"), ("stop_after", 0)])
def test_run_options_of_the_wrong_type_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RunOptions(**{field: value})


def test_labels_outside_the_outputs_are_found_in_the_first_batch_of_an_iterable(tmp_path, data):
    def batches(ds):
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))  # a shuffled loader
        x, y = ds.tensors[0][order], ds.tensors[1][order]
        return [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(y), 8)]  # re-iterable, no dataset metadata

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"data has label 2, but the model's classifier has 2 outputs"):
        prune_finetune(make_model("tinyvgg", 2, seed=0), "l1", 0.5, "all", batches(data[0]), batches(data[1]),
                       p=0, q=1, batch_size=8, out_dir=out, options=QUIET, train_pass_images=24)
    assert not out.exists()


def test_a_label_beyond_the_outputs_in_a_later_batch_is_a_value_error(tmp_path, data):
    def batches(ds):  # in class order: the first batch holds labels 0 and 1 only
        x, y = ds.tensors
        return [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(y), 8)]

    with pytest.raises(ValueError, match="outside the model's outputs.*--num-classes"):
        prune_finetune(make_model("tinyvgg", 2, seed=0), "l1", 0.5, "all", batches(data[0]), batches(data[1]),
                       p=0, q=1, batch_size=8, out_dir=tmp_path / "run", options=QUIET, train_pass_images=24)


def test_resuming_with_another_model_names_the_checkpoint(tmp_path, data):
    out = tmp_path / "run"
    with pytest.raises(Stopped):
        _run(data, out, options=RunOptions(device="cpu", progress=False, stop_after=1))
    with pytest.raises(ValueError, match="do not fit TinyVGG.*delete") as info:
        _run(data, out, model=TinyVGG(3, widths=(8, 16, 16, 32)), resume=True)  # narrower than the run's
    assert str(out / "checkpoints" / "last.pt") in str(info.value)


def test_scoring_labels_are_checked_only_for_criteria_that_use_them(tmp_path):
    """A restricted 3-way model scored on a 6-class build (a subset cell scoring on the full data): activation
    criteria read no labels and run; a loss-based criterion without a full scoring head is refused up front."""
    from benchmark.synthetic import synthetic_splits
    from pruning.loop import LoopConfig, RunOptions, make_model, run_loop

    train, val, _ = synthetic_splits(3, 8, 4, 1, size=16, seed=0)
    score, _, _ = synthetic_splits(6, 4, 1, 1, size=16, seed=1)  # labels 0..5
    quiet = RunOptions(progress=False, device="cpu")
    cfg = LoopConfig("apoz", 0.5, layers=("features.8",), p=0, q=0, batch_size=8)
    s = run_loop(make_model("tinyvgg", 3, seed=0), cfg, train, val, None, score, out_dir=tmp_path / "a", options=quiet)
    assert s["steps"][0]["per_layer"] == {"features.8": [32, 16]}
    cfg = LoopConfig("taylor", 0.5, layers=("features.8",), p=0, q=0, batch_size=8)
    with pytest.raises(ValueError, match="label 5"):
        run_loop(make_model("tinyvgg", 3, seed=0), cfg, train, val, None, score, out_dir=tmp_path / "t", options=quiet)
    assert not (tmp_path / "t").exists()


def test_the_checks_start_no_worker_pool_and_draw_nothing_from_the_rng(data):
    """The checks before a run read first batches through worker-free twins of the loaders: the loaders'
    own iterators (and with them persistent worker pools, whose seed a loader draws from the global RNG
    when it starts) are left unstarted, and the RNG is where it was, so a run with workers gets the numbers
    it got without the checks."""
    from torch.utils.data import DataLoader

    from pruning.loop import LoopConfig
    from pruning.loop.engine import _open
    from pruning.loop.preflight import check_run

    loaders = [DataLoader(d, batch_size=8, num_workers=2, persistent_workers=True) for d in data]
    cfg = LoopConfig("taylor", 0.5, layers="all", p=0, q=0, batch_size=8)
    ctx = _open(make_model("tinyvgg", 4, seed=0), cfg, *loaders, options=QUIET)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check_run(ctx)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(loader._iterator is None for loader in loaders)  # no pool started, none kept alive


def test_a_loader_whose_dataset_batches_itself_passes_the_checks(tmp_path, data):
    """DataLoader(batch_size=None) over a dataset that yields whole batches (how a webdataset pipeline is
    usually read): the checks read its first batch as the run does, and the run goes through."""
    from torch.utils.data import DataLoader, IterableDataset

    class Batches(IterableDataset):
        def __init__(self, ds):
            self.x, self.y = ds.tensors

        def __iter__(self):
            return iter([(self.x[i:i + 8], self.y[i:i + 8]) for i in range(0, len(self.y), 8)])

    train, val = (DataLoader(Batches(d), batch_size=None) for d in data[:2])
    s = prune_finetune(make_model("tinyvgg", 3, seed=0), "l1", 0.5, ["features.8"], train, val, p=0, q=0,
                       batch_size=8, out_dir=tmp_path / "run", options=QUIET, train_pass_images=24)
    assert s["steps"][0]["per_layer"] == {"features.8": [32, 16]}
