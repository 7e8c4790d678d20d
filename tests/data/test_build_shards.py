"""Shard bytes: deterministic across worker counts, fixed tar headers, readable by webdataset and timm."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from build_helpers import WNIDS, build, read_samples, tree_digest
from PIL import Image

from imagenet52p.builder import BuildConfig, build_dataset
from imagenet52p.classes import ClassSet, load_class_set


@pytest.fixture(scope="module")
def w1_w2(layout_roots, class_file, tmp_path_factory):
    base = tmp_path_factory.mktemp("det")
    m1 = build(layout_roots["archives"], base / "w1", class_file, workers=1)
    m2 = build(layout_roots["archives"], base / "w2", class_file, workers=2)
    return (base / "w1", m1), (base / "w2", m2)


def test_byte_identical_across_worker_counts(w1_w2):
    (o1, m1), (o2, m2) = w1_w2
    d1, d2 = tree_digest(o1), tree_digest(o2)
    assert d1 == d2
    assert "manifest.json" in d1 and "_info.json" in d1 and "classes.json" in d1
    assert sum(p.endswith(".tar") for p in d1) == sum(len(s["shards"]) for s in m1["splits"].values()) > 3


def test_rebuild_is_identical_and_seed_changes_the_plan(layout_roots, class_file, tmp_path, w1_w2):
    (o1, m1), _ = w1_w2
    m = build(layout_roots["archives"], tmp_path / "again", class_file)
    assert tree_digest(tmp_path / "again") == tree_digest(o1)
    m9 = build(layout_roots["archives"], tmp_path / "seed9", class_file, seed=9)
    assert m9["options"]["seed"] == 9
    keys = lambda out, man, sp: [s["key"] for s in read_samples(out, man, sp)]  # noqa: E731
    assert keys(tmp_path / "seed9", m9, "train") != keys(o1, m, "train")  # another order / held-out choice
    assert sorted(keys(tmp_path / "seed9", m9, "test")) == sorted(keys(o1, m, "test"))  # same test images


def test_tar_headers_fixed_and_members_in_order(w1_w2):
    (out, manifest), _ = w1_w2
    for sh in manifest["splits"]["train"]["shards"]:
        with tarfile.open(out / sh["path"]) as tf:
            members = tf.getmembers()
        assert [m.name.split(".", 1)[1] for m in members] == ["jpg", "cls", "json"] * (len(members) // 3)
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
        assert sh["num_samples"] == len(members) // 3
        assert (out / sh["path"]).stat().st_size == sh["bytes"] and sh["bytes"] % 10240 == 0


def test_manifest_counts_add_up(w1_w2, class_file):
    (out, m), _ = w1_w2
    cs = load_class_set(class_file)
    assert m["class_set"] == {"name": "fish4", "sha256": cs.sha256, "num_classes": 4}
    assert ClassSet.from_json((out / "classes.json").read_text()) == cs
    for split, s in m["splits"].items():
        assert s["num_samples"] == sum(sh["num_samples"] for sh in s["shards"]) == sum(s["per_class"].values())
        assert list(s["per_class"]) == WNIDS
        assert all(sh["path"].startswith(f"{split}/fish4-{split}-") for sh in s["shards"])
    assert all(n == 1 for n in m["splits"]["val"]["per_class"].values())  # --val-per-class 1
    info = json.loads((out / "_info.json").read_text())
    for split, s in m["splits"].items():
        assert info["splits"][split]["filenames"] == [sh["path"] for sh in s["shards"]]
        assert info["splits"][split]["shard_lengths"] == [sh["num_samples"] for sh in s["shards"]]
        assert info["splits"][split]["num_samples"] == s["num_samples"]


def test_shard_order_mixes_classes(w1_w2):
    (out, m), _ = w1_w2
    labels = [s["cls"] for s in read_samples(out, m, "train")]
    assert labels != sorted(labels) and len(set(labels[:8])) >= 2


def test_plain_webdataset_pipeline_reads_matching_labels(w1_w2):
    import webdataset as wds

    (out, m), _ = w1_w2
    urls = [str(out / sh["path"]) for sh in m["splits"]["train"]["shards"]]
    ds = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "cls", "json", "__key__")
    n = 0
    for img, cls, meta, key in ds:
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (meta["width"], meta["height"])
        assert isinstance(cls, int) and WNIDS[cls] == meta["wnid"] and key.startswith(f"train_{meta['wnid']}_")
        n += 1
    assert n == m["splits"]["train"]["num_samples"]


def test_timm_reader_reads_the_info_json(w1_w2):
    pytest.importorskip("timm")
    from timm.data.readers.reader_wds import ReaderWds

    (out, m), _ = w1_w2
    reader = ReaderWds(root=str(out), split="test")
    assert len(reader) == m["splits"]["test"]["num_samples"]
    got = [(int(target)) for _img, target in reader]
    want = [s["cls"] for s in read_samples(out, m, "test")]
    assert sorted(got) == sorted(want) and len(got) == len(want)


def test_resize_caps_the_shorter_side(layout_roots, class_file, tmp_path):
    m = build_dataset(BuildConfig(root=layout_roots["folders"], out=tmp_path / "r", classes=str(class_file),
                                  val_per_class=1, resize=20, quality=80, workers=1, progress=False))
    assert m["options"]["resize"] == 20 and m["options"]["quality"] == 80
    for s in read_samples(tmp_path / "r", m, "train"):
        w, h = Image.open(io.BytesIO(s["jpg"])).size
        assert min(w, h) == 20 and (w, h) == (s["json"]["width"], s["json"]["height"])
        assert "resize" in s["json"]["reencoded"]


@pytest.mark.parametrize("bad", [dict(shard_size=0), dict(layout="zip"), dict(on_error="ignore"),
                                 dict(val_per_class=-1), dict(resize=2), dict(quality=101), dict(workers=0)])
def test_bad_options_are_value_errors_naming_the_option(bad, tmp_path, class_file):
    name = next(iter(bad)).replace("_", "-")
    with pytest.raises(ValueError, match=f"--{name}"):
        build(tmp_path, tmp_path / "out", class_file, **bad)


def test_imagenet52p_set_labels_and_shard_names(tmp_path):
    from imagenet52p.fake import FakeSpec, make_fake_imagenet

    cs = load_class_set("imagenet52p")
    make_fake_imagenet(tmp_path / "src", cs.wnids, FakeSpec(train_per_class=2, val_per_class=1, width=16, height=16))
    m = build_dataset(BuildConfig(root=tmp_path / "src", out=tmp_path / "out", val_per_class=1, workers=1,
                                  progress=False))
    assert m["class_set"]["name"] == "imagenet52p-v1" and m["class_set"]["num_classes"] == 52
    # the default (automatic) shard counts: 52 samples -> 6 shards of 8-9 (imagenet52p.builder.assign)
    assert [sh["path"] for sh in m["splits"]["val"]["shards"]] == [f"val/imagenet52p-val-{i:06d}.tar" for i in range(6)]
    assert [sh["num_samples"] for sh in m["splits"]["val"]["shards"]] == [9, 9, 9, 9, 8, 8]
    for split in ("train", "val", "test"):
        samples = read_samples(tmp_path / "out", m, split)
        assert len(samples) == 52
        assert sorted(s["cls"] for s in samples) == list(range(52))
        for s in samples:
            info = cs.classes[s["cls"]]
            assert (info.wnid, info.imagenet1k_index, info.voc_class) == (
                s["json"]["wnid"], s["json"]["imagenet1k_index"], s["json"]["voc_class"])
