"""ImageNet52P over real builds: round trip from a generated tree through build_dataset, attributes,
label spaces, and every error path (missing root/manifest/shard, bad checksum, undecodable sample)."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from dataset_helpers import copy_build, count_bytes, make_build, manifest, overwrite_member, tar_samples
from PIL import Image

from imagenet52p import ImageNet52P, ImageNetShards, SampleError
from imagenet52p.classes import imagenet1k_index, load_class_set


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_round_trip_every_label_matches_source_folder(built, split):
    root, out = built
    cs = load_class_set("imagenet52p")
    ds = ImageNet52P(out, split, with_meta=True)
    items = list(ds)
    assert len(items) == len(ds) == ds.num_samples == manifest(out)["splits"][split]["num_samples"]
    assert sorted(m["key"] for _, _, m in items) == sorted(k for k, _, _ in tar_samples(out, split))
    per_class = {}
    for img, label, meta in items:
        folder = meta["source"].split("/")[-2]  # "<split>/<wnid>/<file>" in the folders layout
        assert meta["wnid"] == folder
        assert label == cs.wnid_to_idx[folder]
        assert ds.wnids[label] == folder
        assert isinstance(img, Image.Image) and img.mode == "RGB"
        with Image.open(root / meta["source"]) as src:  # the very pixels of the source file
            assert np.array_equal(np.asarray(img), np.asarray(src.convert("RGB")))
        per_class[folder] = per_class.get(folder, 0) + 1
    assert per_class == {w: n for w, n in ds.per_class.items() if n}


def test_imagenet1k_label_space(built):
    _, out = built
    sub = {m["key"]: y for _, y, m in ImageNet52P(out, "test", with_meta=True, transform=count_bytes)}
    full = list(ImageNet52P(out, "test", with_meta=True, transform=count_bytes, label_space="imagenet1k"))
    assert len(full) == len(sub)
    for _, y, m in full:
        assert y == imagenet1k_index()[m["wnid"]]
        assert y == ImageNet52P(out, "test").imagenet1k_indices[sub[m["key"]]]
    ds = ImageNet52P(out, "test", label_space="imagenet1k")
    assert ds.wnid_to_idx["n01514668"] == imagenet1k_index()["n01514668"] == 7
    assert set(ds.class_to_idx.values()) == set(ds.imagenet1k_indices)


def test_attributes_and_repr(built):
    _, out = built
    ds = ImageNet52P(out, "val", target_transform=str)
    cs = load_class_set("imagenet52p")
    assert ds.num_classes == 52 and ds.wnids == cs.wnids
    assert ds.classes == [c.name for c in cs]  # no duplicate names in the 52
    assert ds.class_to_idx[ds.classes[7]] == 7 and ds.wnid_to_idx[cs.wnids[7]] == 7
    assert ds.voc_classes == [c.voc_class for c in cs] and "dog" in ds.voc_classes
    assert ds.imagenet1k_indices == cs.imagenet1k_indices
    assert isinstance(ds, ImageNetShards) and isinstance(ds, torch.utils.data.IterableDataset)
    assert all(isinstance(y, str) for _, y in ds)  # target_transform applied
    text = repr(ds)
    for part in ("ImageNet52P", "Number of datapoints: 10", f"Root location: {out}", "Split: val",
                 "imagenet52p-v1 (52)", "Target transform"):
        assert part in text


def test_imagenet1k_build_and_duplicate_names(tmp_path_factory):
    """An imagenet1k build reads with the same class; its two 'crane's stay distinct in class_to_idx."""
    _, out = make_build(tmp_path_factory.getbasetemp(), "in1k", train_per_class=3, val_per_class=1,
                        hold_out=1, classes="imagenet1k")
    ds = ImageNet52P(out, "train", with_meta=True, transform=count_bytes)
    assert ds.num_classes == 1000 and ds.class_set.name == "imagenet1k"
    assert ds.classes[imagenet1k_index()["n02012849"]] == "crane (n02012849)"
    assert ds.class_to_idx["crane (n03126707)"] == imagenet1k_index()["n03126707"]
    assert len(ds.class_to_idx) == 1000
    for _, y, m in ds:  # subset space == imagenet1k space for this set
        assert y == imagenet1k_index()[m["wnid"]]


def test_missing_root_and_manifest(tmp_path, built):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        ImageNet52P(tmp_path / "nope")
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="manifest.json not found.*resume"):
        ImageNet52P(tmp_path / "half")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="build-imagenet52p"):
        ImageNet52P(tmp_path / "empty")


def test_bad_arguments(built):
    _, out = built
    with pytest.raises(ValueError, match="split 'validation'.*available: test, train, val"):
        ImageNet52P(out, "validation")
    with pytest.raises(ValueError, match="label_space='1k' is not one of"):
        ImageNet52P(out, label_space="1k")
    with pytest.raises(ValueError, match="even='yes'"):
        ImageNet52P(out, even="yes")
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        ImageNet52P(out, rank=2, world_size=2)
    with pytest.raises(ValueError, match="both rank and world_size"):
        ImageNet52P(out, rank=1)
    with pytest.raises(ValueError, match="only for the train split"):
        ImageNet52P(out, "val", on_error="skip")
    with pytest.raises(ValueError, match="even='drop'.*nothing per rank"):
        ImageNet52P(out, "val", even="drop", rank=0, world_size=11)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ImageNet52P(out, batch_size=0)
    with pytest.raises(ValueError, match="epoch must be"):
        ImageNet52P(out).set_epoch(-1)


def test_empty_split_raises(tmp_path, built):
    out = copy_build(built[1], tmp_path / "b")
    m = manifest(out)
    assert m["splits"]["val"]["num_samples"] > 0
    assert len(ImageNet52P(out, "val")) == m["splits"]["val"]["num_samples"]  # readable before the edit
    m["splits"]["val"].update(num_samples=0, shards=[], per_class={})
    import json
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="split 'val' .* is empty"):
        ImageNet52P(out, "val")


def test_missing_or_damaged_shard(tmp_path, built):
    out = copy_build(built[1], tmp_path / "b")
    shards = manifest(out)["splits"]["train"]["shards"]
    victim = out / shards[2]["path"]
    overwrite_member(victim, tar_samples_keys(out, shards[2]["path"])[0] + ".json", b"{}")  # same size
    ImageNet52P(out)  # sizes still match: only sha256 can tell
    with pytest.raises(ValueError, match=re.escape(str(victim)) + ".*sha256"):
        ImageNet52P(out, verify=True)
    with open(victim, "ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(ValueError, match=re.escape(str(victim)) + ".*bytes"):
        ImageNet52P(out)
    os.remove(victim)
    with pytest.raises(FileNotFoundError, match=re.escape(str(victim))):
        ImageNet52P(out, "train")
    ImageNet52P(out, "val", verify=True)  # other splits are unaffected


def tar_samples_keys(out, rel):
    import tarfile
    with tarfile.open(out / rel) as tf:
        return [n[:-4] for n in tf.getnames() if n.endswith(".jpg")]


def test_undecodable_sample_raises_with_shard_and_key(tmp_path, built):
    out = copy_build(built[1], tmp_path / "b")
    rel = manifest(out)["splits"]["val"]["shards"][1]["path"]
    key = tar_samples_keys(out, rel)[2]
    overwrite_member(out / rel, key + ".jpg")  # zeros: not a JPEG any more
    for tf in (None, __import__("imagenet52p.transforms", fromlist=["eval"]).eval()):
        with pytest.raises(SampleError, match=re.escape(key) + ".*" + re.escape(rel)):
            list(ImageNet52P(out, "val", transform=tf))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_handler_counts_and_keeps_the_rest(tmp_path, built, num_workers):
    out = copy_build(built[1], tmp_path / "b")
    rel = manifest(out)["splits"]["train"]["shards"][0]["path"]
    bad = tar_samples_keys(out, rel)[1]
    overwrite_member(out / rel, bad + ".jpg")
    ds = ImageNet52P(out, "train", with_meta=True, on_error="skip")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers)
    keys = [m["key"] for _, _, m in loader]
    assert len(keys) == len(ds) - 1 and bad not in keys and len(set(keys)) == len(keys)
    assert ds.num_skipped == 1
    with pytest.raises(SampleError, match=bad):  # the default still raises
        list(ImageNet52P(out, "train"))


def test_short_shard_is_an_error_not_a_silent_drop(tmp_path, built):
    """A shard holding fewer samples than the manifest says (same byte size) raises while reading."""
    out = copy_build(built[1], tmp_path / "b")
    m = manifest(out)
    m["splits"]["test"]["shards"][0]["num_samples"] += 1
    m["splits"]["test"]["shards"][1]["num_samples"] -= 1
    import json
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SampleError, match=re.escape(m["splits"]["test"]["shards"][0]["path"])):
        list(ImageNet52P(out, "test"))


def test_lazy_import_keeps_package_light():
    import subprocess
    import sys
    code = "import sys, imagenet52p; print('torch' in sys.modules); imagenet52p.ImageNet52P; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_tar_reader_agrees_with_tarfile(tmp_path, fmt):
    """The fast shard reader sees the same members as tarfile, including long (>100 char) names."""
    import io
    import tarfile

    from imagenet52p.format.tar import iter_tar, read_tar_samples
    fmt_id = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[fmt]
    path = tmp_path / "x.tar"
    names = []
    with tarfile.open(path, "w", format=fmt_id) as tf:
        for i in range(4):
            key = ("d" * 120 + "/" if fmt == "ustar" else "k" * (60 + 40 * i)) + f"s{i}"
            for ext, data in (("jpg", bytes([i]) * (700 + i)), ("cls", str(i).encode()), ("json", b"{}")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                names.append(info.name)
    assert [n for n, *_ in iter_tar(path)] == names
    samples = list(read_tar_samples(path, 1, 3))
    assert [int(p["cls"]) for _, p in samples] == [1, 2]
    assert samples[0][1]["jpg"] == bytes([1]) * 701 and samples[0][0].endswith("s1")
    data = bytearray(path.read_bytes())
    data[148] ^= 1  # damage the first header's checksum
    path.write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(iter_tar(path))
