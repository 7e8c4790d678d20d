"""``imagenet52p.format.readers`` against the real readers, and ``--shards-per-split``.

Two real builds (12 and 5 shards per split) of a fake tree; for each (world size, workers) every
rank is simulated in turn: timm's ``ReaderWds`` reads the rank from ``torch.distributed`` (a real
process group of torch's ``fake`` backend, which answers ``get_rank``/``get_world_size`` without
peers), webdataset's ``split_by_node`` from ``RANK``/``WORLD_SIZE``; DataLoader workers are real
processes.  Each sample is identified by a hash of its decoded pixels (the fake images differ).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from build_helpers import WNIDS, tree_digest

from imagenet52p.fake import FakeSpec, make_fake_imagenet
from imagenet52p.format import load_manifest
from imagenet52p.format.readers import predict_timm, predict_wds, suggest_shards, timm_shard_order

torch = pytest.importorskip("torch")
timm_data = pytest.importorskip("timm.data")
wds = pytest.importorskip("webdataset")

SPEC = FakeSpec(train_per_class=10, val_per_class=3, width=24, height=16)  # train 28, val 12, test 12


def _build(root: Path, out: Path, n: int, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "imagenet52p.build_cli", "--root", str(root), "--out", str(out), "--classes",
           str(root.parent / "fish4.txt"), "--val-per-class", "3", "--workers", "1", "--quiet",
           "--shards-per-split", str(n), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("readers")
    root = make_fake_imagenet(base / "src", WNIDS, SPEC)
    (base / "fish4.txt").write_text("\n".join(WNIDS) + "\n")
    out = {}
    for n in (12, 5):
        out[n] = base / f"b{n}"
        r = _build(root, out[n], n)
        assert r.returncode == 0, r.stderr
    return out


def _lengths(out: Path, split: str) -> list[int]:
    return [sh["num_samples"] for sh in load_manifest(out)["splits"][split]["shards"]]


def test_shards_per_split_sizes_and_bytes(builds, tmp_path):
    assert [_lengths(builds[12], s) for s in ("train", "val", "test")] == [[3] * 4 + [2] * 8, [1] * 12, [1] * 12]
    assert _lengths(builds[5], "train") == [6, 6, 6, 5, 5] and _lengths(builds[5], "val") == [3, 3, 2, 2, 2]
    again = tmp_path / "again"
    assert _build(builds[5].parent / "src", again, 5).returncode == 0
    assert tree_digest(again) == tree_digest(builds[5])
    assert load_manifest(again)["options"]["shards_per_split"] == 5


def test_shards_per_split_refused_above_split_size(builds, tmp_path):
    r = _build(builds[5].parent / "src", tmp_path / "x", 13)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--shards-per-split 13 exceeds the 12 samples of split 'val'" in r.stderr


def _pixel_key(img):
    w = torch.utils.data.get_worker_info()
    return (w.id if w else 0), hashlib.sha1(img.tobytes()).hexdigest()


def _wds_key(sample):
    w = torch.utils.data.get_worker_info()
    return (w.id if w else 0), sample["__key__"]


def _timm_rank(out: Path, split: str, rank: int, world: int, workers: int, batch: int) -> list[tuple]:
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if world > 1:
        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world)
    try:
        ds = timm_data.create_dataset("wds/imagenet52p", root=str(out), split=split, is_training=split == "train",
                                      batch_size=batch, seed=42)
    finally:
        if world > 1:
            dist.destroy_process_group()
    ds.transform = _pixel_key
    ds.set_loader_cfg(num_workers=workers)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [key for key, _target in loader]


def _wds_rank(out: Path, split: str, rank: int, world: int, workers: int, empty_check: bool = False):
    urls = [str(out / sh["path"]) for sh in load_manifest(out)["splits"][split]["shards"]]
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    try:
        ds = wds.WebDataset(urls, nodesplitter=wds.split_by_node, shardshuffle=False,
                            empty_check=empty_check).map(_wds_key)
        return list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]


def _check(pred, per_rank: list[list[tuple]], world: int, workers: int) -> None:
    yielded = [[0] * workers for _ in range(world)]
    for r, keys in enumerate(per_rank):
        for k, _ in keys:
            yielded[r][k] += 1
    counts = Counter(key for keys in per_rank for _, key in keys)
    assert yielded == pred.yielded
    assert sum(counts.values()) - len(counts) == pred.repeats
    assert pred.num_samples - len(counts) == pred.misses


def _sweep_case(builds, n, split, world, workers, batch=1):
    out = builds[n]
    lengths = _lengths(out, split)
    timm = predict_timm(lengths, world, workers, training=split == "train", batch_size=batch)
    _check(timm, [_timm_rank(out, split, r, world, workers, batch) for r in range(world)], world, workers)
    pw = predict_wds(lengths, world, workers)
    _check(pw, [_wds_rank(out, split, r, world, workers) for r in range(world)], world, workers)
    return timm, pw


# a few representative cases by default: exact, misses with 1 shard per worker missing, repeats and
# misses from unequal shards, a hang (empty worker under DDP), batch rounding
DEFAULT_CASES = [(12, "train", 4, 3, 1), (5, "train", 1, 2, 1), (5, "val", 2, 3, 1), (12, "train", 2, 2, 4)]


@pytest.mark.parametrize("n,split,world,workers,batch", DEFAULT_CASES)
def test_prediction_matches_real_readers(builds, n, split, world, workers, batch):
    timm, pw = _sweep_case(builds, n, split, world, workers, batch)
    if (n, world, workers) == (12, 4, 3):
        assert timm.exact is False and timm.repeats == 8 and pw.exact  # timm: 36 yields of 28; wds: 7 per rank
    if (n, split, world, workers) == (5, "val", 2, 3):
        assert timm.hangs and timm.verdict().startswith("hangs: 1 of 2x3")
        assert pw.hangs is False and pw.verdict().startswith("empty: 1 of 2x3")
    if (n, world, workers) == (5, 1, 2):
        assert timm.misses > 0 and timm.repeats > 0 and pw.exact


@pytest.mark.heavy
@pytest.mark.parametrize("n", [12, 5])
@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_prediction_matches_real_readers_full_sweep(builds, n, split, world, workers):
    _sweep_case(builds, n, split, world, workers)


def test_val_12_shards_exact_for_every_divisor(builds):
    for world, workers in [(1, 1), (2, 2), (4, 3), (3, 4)]:
        assert predict_timm(_lengths(builds[12], "val"), world, workers, training=False).exact
        assert predict_wds(_lengths(builds[12], "val"), world, workers).exact


def test_webdataset_empty_check_raises_on_a_worker_without_shard(builds):
    with pytest.raises(ValueError, match="No samples found"):
        _wds_rank(builds[5], "val", 1, 2, 3, empty_check=True)


def test_timm_shard_order_is_webdataset_shuffle():
    import random

    from webdataset.filters import _shuffle

    for n, epoch in [(12, 0), (5, 3), (700, 1)]:
        real = list(_shuffle(iter(range(n)), 500, 100, random.Random(42 + epoch)))
        assert timm_shard_order(n, 42, epoch) == real


def test_suggest_shards():
    assert suggest_shards([28, 12, 12], 2, 3, 5) == 6  # multiple of 6, divides 12 (not 28: none up to 12)
    assert suggest_shards([2600, 2600], 4, 2, 11) == 8  # divides 2600
    assert suggest_shards([5], 2, 3, 1) is None


def _info(out: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagenet52p.cli", "info", str(out), "--readers", *args],
                          capture_output=True, text=True, timeout=60)


def test_info_readers_exact_and_not(builds):
    r = _info(builds[12], "--world-size", "2", "--workers", "3")
    assert r.returncode == 0, r.stderr
    assert "  val (12 samples, 12 shards): timm: exact; webdataset: exact" in r.stdout
    assert "train: timm's 2 repeats are the least possible (6 workers x 5 samples > 28" in r.stdout
    assert "--train-num-samples 24 to train.py" in r.stdout and "rebuild with" not in r.stdout
    r = _info(builds[5], "--world-size", "2", "--workers", "3")
    assert r.returncode == 0
    assert "  val (12 samples, 5 shards): timm: hangs: 1 of 2x3 (rank, worker) without a shard" in r.stdout
    assert "rebuild with: build-imagenet52p ... --shards-per-split 6 " in r.stdout
    r = _info(builds[12], "--world-size", "1", "--workers", "1")
    assert "rebuild with" not in r.stdout and "timm: exact; webdataset: exact" in r.stdout
    bad = _info(builds[12].parent / "nothing")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
