"""Shared pieces of the dataset tests: real builds (imagenet52p.fake -> build_dataset), tar readers
independent of imagenet52p.dataset, and in-place shard damage.

Builds are made once per session and cached here (several test modules use them).
"""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from build_helpers import read_samples

from imagenet52p.builder import BuildConfig, build_dataset
from imagenet52p.classes import load_class_set
from imagenet52p.fake import FakeSpec, make_fake_imagenet

NUM_FAKE_CLASSES = 5
_CACHE: dict[str, tuple[Path, Path]] = {}


def make_build(base: Path, name: str, *, train_per_class=10, val_per_class=4, width=64, height=48,
               hold_out=2, shard_size=7, eval_shard_size=5, classes="imagenet52p") -> tuple[Path, Path]:
    """(fake ImageNet root, build dir): NUM_FAKE_CLASSES classes of ``classes`` generated, then built."""
    if name in _CACHE:
        return _CACHE[name]
    wnids = load_class_set(classes).wnids[:: 52 // NUM_FAKE_CLASSES][:NUM_FAKE_CLASSES]
    root, out = base / f"{name}-src", base / f"{name}-build"
    make_fake_imagenet(root, wnids, FakeSpec(train_per_class=train_per_class, val_per_class=val_per_class,
                                             width=width, height=height))
    build_dataset(BuildConfig(root=root, out=out, classes=classes, val_per_class=hold_out, seed=0, workers=1,
                              shard_size=shard_size, eval_shard_size=eval_shard_size, allow_missing=True,
                              progress=False))
    _CACHE[name] = (root, out)
    return root, out


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Train 40 samples in 6 shards (7 each, last 5), val 10 in 2, test 20 in 4 (all uneven-friendly)."""
    return make_build(tmp_path_factory.getbasetemp(), "small")


def copy_build(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def tar_samples(out: Path, split: str) -> list[tuple[str, int, dict]]:
    """(key, label, json) of every sample of a split, in manifest/tar order, read with plain tarfile."""
    return [(s["key"], s["cls"], s["json"]) for s in read_samples(out, manifest(out), split)]


def overwrite_member(shard: Path, member: str, data: bytes | None = None) -> None:
    """Overwrite a member's bytes in place (same length, so the tar and its size stay valid)."""
    with tarfile.open(shard) as tf:
        m = tf.getmember(member)
        offset, size = m.offset_data, m.size
    data = (b"\x00" * size) if data is None else data.ljust(size, b"\x00")[:size]
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(data)


def count_bytes(data) -> int:
    """A picklable 'transform' that skips decoding (for split tests): the JPEG's length."""
    return len(data)


count_bytes.accepts_jpeg = True


def ddp_worker(rank: int, world: int, out: str, port: int, result_dir: str) -> None:
    """torch.multiprocessing.spawn target: a real gloo process group; the dataset takes rank/world from it."""
    import torch.distributed as dist

    from imagenet52p import ImageNet52P
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ds = ImageNet52P(out, "test", transform=count_bytes, with_meta=True, even="pad", batch_size=3)
        keys = [m["key"] for _, _, m in ds]
        Path(result_dir, f"{rank}.json").write_text(json.dumps({"rank": ds.rank, "world": ds.world_size,
                                                                "len": len(ds), "keys": keys}))
    finally:
        dist.destroy_process_group()
