"""Shared fixtures and helpers of the build tests (import with ``from build_helpers import ...``)."""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

import pytest
from fake_layouts import plant_quirks, to_archives, to_devkit, to_kaggle

from imagenet52p.builder import BuildConfig, build_dataset
from imagenet52p.fake import FakeSpec, make_fake_imagenet

# ImageNet-1k classes 0, 1, 3, 4 (tench, goldfish, tiger shark, hammerhead): a 4-class user list
WNIDS = ["n01440764", "n01443537", "n01491361", "n01494475"]
SPEC = FakeSpec(train_per_class=4, val_per_class=2, width=40, height=32)
BIN = Path(sys.executable).parent
LAYOUT_ROOTS = ("folders", "kaggle", "devkit", "devkit_tgz", "archives")


@pytest.fixture(scope="session")
def class_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("classes") / "fish4.txt"
    p.write_text("# four fish\n" + "\n".join(WNIDS) + "\n")
    return p


@pytest.fixture(scope="session")
def quirky(tmp_path_factory):
    """(folders root, quirks) of a 4-class tree with every planted quirk."""
    root = tmp_path_factory.mktemp("src") / "folders"
    make_fake_imagenet(root, WNIDS, SPEC)
    return root, plant_quirks(root, WNIDS, SPEC)


@pytest.fixture(scope="session")
def layout_roots(quirky, tmp_path_factory) -> dict[str, Path]:
    """The quirky tree in every input layout."""
    folders, _ = quirky
    base = tmp_path_factory.mktemp("layouts")
    return {"folders": folders, "kaggle": to_kaggle(folders, base / "kaggle"),
            "devkit": to_devkit(folders, base / "devkit"),
            "devkit_tgz": to_devkit(folders, base / "devkit_tgz", tgz=True),
            "archives": to_archives(folders, base / "archives")}


def cfg(root, out, classes, **kw) -> BuildConfig:
    opts = dict(val_per_class=1, workers=1, progress=False, shard_size=5, eval_shard_size=3)
    opts.update(kw)
    return BuildConfig(root=root, out=out, classes=str(classes), **opts)


def build(root, out, classes, **kw) -> dict:
    return build_dataset(cfg(root, out, classes, **kw))


def read_samples(out: Path, manifest: dict, split: str) -> list[dict]:
    """Every sample of a split, read with tarfile: {"key", "jpg", "cls", "json", "shard"}."""
    samples = []
    for sh in manifest["splits"][split]["shards"]:
        with tarfile.open(Path(out) / sh["path"]) as tf:
            cur = None
            for m in tf:
                key, ext = m.name.split(".", 1)
                if cur is None or cur["key"] != key:
                    cur = {"key": key, "shard": sh["path"]}
                    samples.append(cur)
                cur[ext] = tf.extractfile(m).read()
    for s in samples:
        s["cls"] = int(s["cls"])
        s["json"] = json.loads(s["json"])
    return samples


def tree_digest(out: Path) -> dict[str, str]:
    """sha256 of every build file (not the resume state under .build/)."""
    out = Path(out)
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".build" not in p.relative_to(out).parts}
