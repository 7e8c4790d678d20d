"""Checkpoint and resume: an interrupted run, resumed, gives exactly the uninterrupted numbers on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import cli
from pruning.loop import RunOptions, Stopped, make_model, prune_finetune
from pruning.loop.rng import rng_state, set_rng_state
from pruning.loop.rundir import load_checkpoint
from benchmark.synthetic import synthetic_splits


pytestmark = pytest.mark.usefixtures("one_thread")


def _strip_timing(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "timing"} for r in rows]


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    import numpy as np
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_resume_after_every_checkpoint_gives_identical_files(tmp_path):
    """Stop after k checkpoints (every layer step, mid-step chunk, final epoch), resume, compare."""
    data = synthetic_splits(5, 16, 6, 6, size=20, seed=1, noise=30.0)
    kw = dict(criterion="random", ratio=0.5, layers="all", train_data=data[0], val_data=data[1], test_data=data[2],
              p=1.5, q=2.5, lr=0.02, batch_size=16, schedule="cosine")
    ref = tmp_path / "ref"
    prune_finetune(make_model("tinyvgg", 5, seed=3), out_dir=ref, options=RunOptions(progress=False), **kw)
    n_checkpoints = 1 + 4 * 2 + 3  # baseline, 4 steps x (mid-step chunk + end), 3 final chunks
    for k in (1, 2, 5, 9, 10, 12):
        run = tmp_path / f"stop{k}"
        with pytest.raises(Stopped):
            prune_finetune(make_model("tinyvgg", 5, seed=3), out_dir=run,
                           options=RunOptions(progress=False, stop_after=k), **kw)
        assert not (run / "summary.json").exists()
        position = load_checkpoint(run / "checkpoints" / "last.pt")["position"]
        assert position["stage"] in ("steps", "final", "done")
        prune_finetune(make_model("tinyvgg", 5, seed=3), out_dir=run, resume=True,
                       options=RunOptions(progress=False), **kw)
        assert (run / "summary.json").read_bytes() == (ref / "summary.json").read_bytes(), k
        assert _strip_timing(run / "events.jsonl") == _strip_timing(ref / "events.jsonl"), k
        assert (run / "model" / "plan.json").read_bytes() == (ref / "model" / "plan.json").read_bytes()
    with pytest.raises(Stopped):  # the count above is the real number of checkpoints
        prune_finetune(make_model("tinyvgg", 5, seed=3), out_dir=tmp_path / "last",
                       options=RunOptions(progress=False, stop_after=n_checkpoints), **kw)
    position = load_checkpoint(tmp_path / "last" / "checkpoints" / "last.pt")["position"]
    assert (position["stage"], position["chunk"]) == ("final", 3)  # after the last final epoch
    assert not (tmp_path / "last" / "summary.json").exists()


def test_a_checkpoint_in_the_format_before_the_typed_state_still_resumes(tmp_path):
    """Checkpoints written before the state was a typed object (the record had an unused ``"test"`` key)
    resume to the uninterrupted numbers."""
    data = synthetic_splits(4, 10, 4, 4, size=16, seed=1, noise=30.0)
    kw = dict(criterion="taylor", ratio=0.5, layers="all", train_data=data[0], val_data=data[1], test_data=data[2],
              p=1.5, q=2, lr=0.02, batch_size=8)
    ref = prune_finetune(make_model("tinyvgg", 4, seed=3), out_dir=tmp_path / "ref", options=RunOptions(progress=False),
                         **kw)
    for k in (4, 10):  # mid-step (a partial record and timing), and mid-final (best_state kept)
        run = tmp_path / f"old{k}"
        with pytest.raises(Stopped):
            prune_finetune(make_model("tinyvgg", 4, seed=3), out_dir=run,
                           options=RunOptions(progress=False, stop_after=k), **kw)
        last = run / "checkpoints" / "last.pt"
        ck = load_checkpoint(last)
        record = json.loads(ck["state"])
        legacy = {key: record[key] for key in ("baseline", "steps", "final", "partial", "best")}
        legacy["test"] = None
        legacy.update({key: record[key] for key in record if key not in legacy})
        ck["state"] = json.dumps(legacy)
        assert (record["partial"] is not None) == (k == 4) and (ck["best_state"] is not None) == (k == 10)
        torch.save(ck, last)
        out = prune_finetune(make_model("tinyvgg", 4, seed=3), out_dir=run, resume=True,
                             options=RunOptions(progress=False), **kw)
        assert out == ref, k
        assert (run / "summary.json").read_bytes() == (tmp_path / "ref" / "summary.json").read_bytes(), k


def test_write_json_atomic_writes_sorted_indented_json_and_leaves_no_temporary_file(tmp_path):
    from pruning.loop.rundir import write_json_atomic
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    write_json_atomic(tmp_path / "a.json", {"b": 2, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n "a": [\n  1,\n  2\n ],\n "b": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_resume_refuses_a_changed_configuration(tmp_path):
    data = synthetic_splits(3, 8, 4, 4, size=16, seed=0)
    kw = dict(layers="all", train_data=data[0], val_data=data[1], p=0, q=1, batch_size=8, out_dir=tmp_path / "run")
    with pytest.raises(Stopped):
        prune_finetune(make_model("tinyvgg", 3), "l1", 0.5, options=RunOptions(progress=False, stop_after=2), **kw)
    with pytest.raises(ValueError, match="another configuration"):
        prune_finetune(make_model("tinyvgg", 3), "l1", 0.25, resume=True, options=RunOptions(progress=False), **kw)
    with pytest.raises(ValueError, match="resume"):
        prune_finetune(make_model("tinyvgg", 3), "l1", 0.5, options=RunOptions(progress=False), **kw)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """A real build (shards on disk) of a synthetic 6-class ImageNet."""
    from imagenet52p.builder import BuildConfig, build_dataset
    from imagenet52p.classes import load_class_set
    from imagenet52p.fake import FakeSpec, make_fake_imagenet
    base = tmp_path_factory.mktemp("loopdata")
    wnids = load_class_set("imagenet52p").wnids[:6]
    make_fake_imagenet(base / "tree", wnids, FakeSpec(train_per_class=24, val_per_class=6, width=40, height=32))
    (base / "classes.txt").write_text("\n".join(wnids) + "\n")
    build_dataset(BuildConfig(root=base / "tree", out=base / "build", classes=str(base / "classes.txt"),
                              val_per_class=5, seed=0, workers=1, shard_size=50, progress=False))
    return base / "build"


def _prune_cmd(build, out, *extra):
    return [cli("imagenet52p"), "prune", "--model", "tinyvgg", "--criterion", "l1", "--ratio", "0.5", "--data",
            str(build), "--out", str(out), "--p", "0.5", "--q", "3", "--lr", "0.02", "--batch-size", "16",
            "--image-size", "32", "--device", "cpu", "--workers", "0", "--no-progress", *extra]


def test_kill_and_resume_in_a_subprocess(tmp_path, build_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_prune_cmd(build_dir, ref), check=True, env=env, capture_output=True, timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_prune_cmd(build_dir, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    events = run / "events.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if events.exists() and len(events.read_text().splitlines()) >= 3:  # baseline + 2 of 4 steps
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (run / "summary.json").exists()
    assert (run / "checkpoints" / "last.pt").exists()
    subprocess.run(_prune_cmd(build_dir, run, "--resume"), check=True, env=env, capture_output=True, timeout=300)
    assert (run / "summary.json").read_bytes() == (ref / "summary.json").read_bytes()
    assert _strip_timing(run / "events.jsonl") == _strip_timing(ref / "events.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images"]["train_images_per_epoch"] == 6 * (24 - 5)
    assert [r["epoch"] for r in summary["final"]["epochs"]] == [1.0, 2.0, 3.0]


class AugmentedBatches:
    """An iterable of batches with no length that draws from torch's RNG (random flips), like a
    webdataset pipeline with augmentation; ``set_epoch`` reshuffles."""

    def __init__(self, ds, batch_size=8):
        self.ds, self.batch_size, self.epoch = ds, batch_size, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        x, y = self.ds.tensors
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + self.epoch))
        for i in range(0, len(y), self.batch_size):
            idx = order[i:i + self.batch_size]
            flip = torch.rand(len(idx)) < 0.5  # global RNG, as torchvision transforms do
            xb = x[idx].clone()
            xb[flip] = xb[flip].flip(-1)
            yield xb, y[idx]


def test_resume_with_an_iterable_that_uses_the_rng(tmp_path):
    data = synthetic_splits(4, 12, 4, 4, size=16, seed=2, noise=30.0)
    kw = dict(criterion="mean_activation", ratio=0.5, layers=["features.8", "features.4"], val_data=data[1],
              p=0.5, q=2, data_fraction=0.5, batch_size=8, lr=0.02, score_images=16)
    ref = prune_finetune(make_model("tinyvgg", 4, seed=1), train_data=AugmentedBatches(data[0]), out_dir=tmp_path / "a",
                         options=RunOptions(progress=False), **kw)
    assert ref["images"]["train_images_per_epoch"] == 24  # counted by one pass (no len), then the fraction
    assert [s["finetune_images"] for s in ref["steps"]] == [12, 12]
    for k in (2, 4):
        with pytest.raises(Stopped):
            prune_finetune(make_model("tinyvgg", 4, seed=1), train_data=AugmentedBatches(data[0]),
                           out_dir=tmp_path / f"b{k}", options=RunOptions(progress=False, stop_after=k), **kw)
        prune_finetune(make_model("tinyvgg", 4, seed=1), train_data=AugmentedBatches(data[0]), out_dir=tmp_path / f"b{k}",
                       resume=True, options=RunOptions(progress=False), **kw)
        assert (tmp_path / f"b{k}" / "summary.json").read_bytes() == (tmp_path / "a" / "summary.json").read_bytes()


def test_resume_is_exact_with_dataloader_workers(tmp_path, build_dir):
    """A build read by 2 DataLoader workers (random crops drawn in the workers): still exact."""
    from pruning.loop import LoopConfig
    from benchmark.run import RunSpec, run_spec
    spec = RunSpec(model="tinyvgg", data=str(build_dir), image_size=32)
    cfg = LoopConfig("l1", 0.5, layers=("features.8", "features.4"), p=0.5, q=2, batch_size=16, lr=0.02,
                     data_fraction=0.5)
    opts = RunOptions(device="cpu", num_workers=2, progress=False)
    ref = run_spec(spec, cfg, tmp_path / "ref", opts)
    assert ref["images"]["train_images_per_epoch"] == round(0.5 * 6 * (24 - 5))
    with pytest.raises(Stopped):
        run_spec(spec, cfg, tmp_path / "run", RunOptions(device="cpu", num_workers=2, progress=False, stop_after=3))
    run_spec(spec, cfg, tmp_path / "run", opts, resume=True)
    assert (tmp_path / "run" / "summary.json").read_bytes() == (tmp_path / "ref" / "summary.json").read_bytes()
