"""Exact epochs: every sample exactly once for num_workers in {0..3} x world_size in {1..4} (including
more readers than shards), equal DDP shares with flagged padding / counted dropping, batch-aligned
worker shares, and deterministic per-epoch shuffling that persistent workers follow."""
from __future__ import annotations

import warnings
from collections import Counter

import pytest
from dataset_helpers import count_bytes, tar_samples
from torch.utils.data import DataLoader

from imagenet52p import ImageNet52P
from imagenet52p.dataset import Segment, segments, worker_range

# 3 workers on this 2-core machine are deliberate (uneven splits); torch's advice about it is noise here
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def read_keys(out, split, num_workers, **kw):
    ds = ImageNet52P(out, split, transform=count_bytes, with_meta=True, **kw)
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    return ds, [(m["key"], m["padded"]) for _, _, m in loader]


@pytest.mark.parametrize("split", ["train", "test"])  # 40 samples in 6 shards; 20 in 4
@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
def test_every_sample_exactly_once(built, split, num_workers):
    _, out = built
    expected = sorted(k for k, _, _ in tar_samples(out, split))
    for world in (1, 2, 3, 4):
        seen, lens = [], []
        for rank in range(world):
            ds, got = read_keys(out, split, num_workers, rank=rank, world_size=world, shuffle=True, seed=3)
            assert len(got) == len(ds), (world, rank)
            assert not any(p for _, p in got)
            seen += [k for k, _ in got]
            lens.append(len(ds))
        assert sorted(seen) == expected, (world, num_workers)
        assert max(lens) - min(lens) <= 1


def test_more_readers_than_samples_does_not_hang(built):
    """12 readers (4 ranks x 3 workers) on the 10-sample val split (2 shards): some read nothing."""
    _, out = built
    seen = []
    for rank in range(4):
        _, got = read_keys(out, "val", 3, rank=rank, world_size=4)
        seen += [k for k, _ in got]
    assert sorted(seen) == sorted(k for k, _, _ in tar_samples(out, "val"))


@pytest.mark.parametrize("world", [3, 4])
def test_even_pad_equal_shares_with_flagged_repeats(built, world):
    _, out = built
    n = 20  # test split
    per = -(-n // world)
    plain, padded = [], []
    for rank in range(world):
        ds, got = read_keys(out, "test", 2, rank=rank, world_size=world, even="pad", shuffle=True, batch_size=2)
        assert len(got) == len(ds) == per
        plain += [k for k, p in got if not p]
        padded += [k for k, p in got if p]
    assert sorted(plain) == sorted(k for k, _, _ in tar_samples(out, "test"))
    assert len(padded) == world * per - n and set(padded) <= set(plain)


def test_even_drop_equal_shares_never_duplicates(built):
    _, out = built
    world, seen = 3, []
    for rank in range(world):
        ds, got = read_keys(out, "test", 0, rank=rank, world_size=world, even="drop")
        assert len(got) == len(ds) == 20 // world
        seen += [k for k, _ in got]
    assert len(set(seen)) == len(seen) == 18


def test_batch_aligned_worker_shares_make_len_loader_exact(built):
    _, out = built
    ds = ImageNet52P(out, "train", transform=count_bytes, batch_size=4)
    loader = DataLoader(ds, batch_size=4, num_workers=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Length of IterableDataset")  # more batches than len(loader)
        batches = [len(y) for _, y in loader]
        assert len(batches) == len(loader) == 10
    assert sum(batches) == 40 and batches.count(4) == 10
    unaligned = DataLoader(ImageNet52P(out, "train", transform=count_bytes), batch_size=4, num_workers=3)
    assert len([y for _, y in unaligned]) > len(unaligned)  # what the alignment prevents
    ds7 = ImageNet52P(out, "train", transform=count_bytes, batch_size=7)
    sizes = sorted(len(y) for _, y in DataLoader(ds7, batch_size=7, num_workers=3))
    assert sizes == [5, 7, 7, 7, 7, 7]  # only the last batch of the epoch is partial


def test_worker_range_and_segments_cover_exactly():
    for count in range(0, 30):
        for workers in range(1, 5):
            for bs in (None, 1, 4):
                spans = [worker_range(count, workers, w, bs) for w in range(workers)]
                assert spans[0][0] == 0 and spans[-1][1] == count
                assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    lengths = [3, 5, 2]
    assert segments([2, 0, 1], lengths, 1, 7) == [Segment(2, 1, 2), Segment(0, 0, 3), Segment(1, 0, 2)]
    assert segments([0, 1, 2], lengths, 9, 12) == [Segment(2, 1, 2), Segment(0, 0, 2, True)]


def test_shuffle_deterministic_per_epoch(built):
    _, out = built

    def order(epoch, seed=0, workers=0):
        ds = ImageNet52P(out, "train", transform=count_bytes, with_meta=True, seed=seed, shuffle_buffer=16)
        ds.set_epoch(epoch)
        return [m["key"] for _, _, m in DataLoader(ds, batch_size=None, num_workers=workers)]

    canonical = [k for k, _, _ in tar_samples(out, "train")]
    e0, e1 = order(0), order(1)
    assert e0 == order(0) and order(1, workers=2) == order(1, workers=2)
    assert e0 != e1 and sorted(e0) == sorted(e1) == sorted(canonical)
    assert e0 != canonical and order(0, seed=1) != e0
    plain = ImageNet52P(out, "train", transform=count_bytes, with_meta=True, shuffle=False)
    assert [m["key"] for _, _, m in plain] == canonical  # shuffle=False reads manifest order
    evals = [m["key"] for _, _, m in ImageNet52P(out, "test", transform=count_bytes, with_meta=True)]
    assert evals == [k for k, _, _ in tar_samples(out, "test")]  # eval splits default to no shuffle


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_set_epoch_reaches_persistent_workers(built, context):
    _, out = built
    ds = ImageNet52P(out, "train", transform=count_bytes, with_meta=True, shuffle_buffer=8)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, multiprocessing_context=context)
    runs = []
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        runs.append([m["key"] for _, _, m in loader])
    fresh = ImageNet52P(out, "train", transform=count_bytes, with_meta=True, shuffle_buffer=8)
    fresh.set_epoch(1)
    assert runs[1] == [m["key"] for _, _, m in DataLoader(fresh, batch_size=None, num_workers=2)]
    assert runs[0] == runs[2] != runs[1]
    assert Counter(runs[0]) == Counter(runs[1])


def test_rank_and_world_size_come_from_torch_distributed(built, tmp_path):
    import json
    import socket

    import torch.multiprocessing as tmp
    from dataset_helpers import ddp_worker
    _, out = built
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp.spawn(ddp_worker, args=(3, str(out), port, str(tmp_path)), nprocs=3, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)]
    assert [(r["rank"], r["world"], r["len"]) for r in results] == [(0, 3, 7), (1, 3, 7), (2, 3, 7)]
    keys = [k for r in results for k in r["keys"]]
    assert len(keys) == 21 and set(keys) == {k for k, _, _ in tar_samples(out, "test")}
