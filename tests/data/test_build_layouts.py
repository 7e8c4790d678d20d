"""Every input layout gives the same, correctly labelled samples; planted quirks are handled."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from build_helpers import LAYOUT_ROOTS, SPEC, WNIDS, build, read_samples
from fake_layouts import devkit_ids, to_archives, to_devkit
from PIL import Image

from imagenet52p.builder import BuildError
from imagenet52p.builder.layouts import detect_layout
from imagenet52p.classes import imagenet1k_index
from imagenet52p.fake import make_fake_imagenet

EXPECTED_LAYOUT = {"folders": "folders", "kaggle": "kaggle", "devkit": "devkit", "devkit_tgz": "devkit",
                   "archives": "archives"}


@pytest.fixture(scope="module")
def builds(layout_roots, class_file, tmp_path_factory):
    base = tmp_path_factory.mktemp("builds")
    return {name: (base / name, build(root, base / name, class_file)) for name, root in layout_roots.items()}


def _content(out, manifest, split):
    """{(label, wnid, sha256 of the stored jpg)} of a split."""
    return sorted((s["cls"], s["json"]["wnid"], hashlib.sha256(s["jpg"]).hexdigest())
                  for s in read_samples(out, manifest, split))


def test_fake_devkit_ids_are_not_sorted_order():
    ids = devkit_ids()
    assert sorted(ids.values()) == list(range(1, 1001))
    assert sum(ids[w] == i + 1 for w, i in imagenet1k_index().items()) < 10  # a real permutation


@pytest.mark.parametrize("name", LAYOUT_ROOTS)
def test_layout_detected_and_labels_match_folders(builds, name):
    out, manifest = builds[name]
    assert manifest["layout"] == EXPECTED_LAYOUT[name]
    ref_out, ref = builds["folders"]
    for split in ("train", "val", "test"):
        samples = read_samples(out, manifest, split)
        assert samples, split
        for s in samples:  # label in the set's index space agrees with the wnid and the source folder
            assert WNIDS[s["cls"]] == s["json"]["wnid"]
            assert s["json"]["imagenet1k_index"] == imagenet1k_index()[s["json"]["wnid"]]
            assert "." not in s["key"] and s["key"].startswith(f"{split}_{s['json']['wnid']}_")
        # the same images land in the same split with the same labels, whatever the layout
        assert _content(out, manifest, split) == _content(ref_out, ref, split), split
    assert manifest["splits"]["test"]["num_samples"] == len(WNIDS) * SPEC.val_per_class - 1  # one truncated


@pytest.mark.parametrize("name", ["folders", "devkit", "archives"])
def test_test_split_labels_follow_the_source(builds, layout_roots, name):
    """test = ImageNet val: each image's label is the class folder it came from in the folders tree."""
    out, manifest = builds[name]
    folders = layout_roots["folders"]
    by_name = {p.name: p.parent.name for p in (folders / "val").glob("*/*")}
    for s in read_samples(out, manifest, "test"):
        assert by_name[Path(s["json"]["source"]).name] == s["json"]["wnid"]


@pytest.mark.parametrize("name", LAYOUT_ROOTS)
def test_every_quirk_is_stored_or_listed(builds, quirky, name):
    out, manifest = builds[name]
    folders, quirks = quirky
    stored = {}
    for split in ("train", "val", "test"):
        for s in read_samples(out, manifest, split):
            stored[Path(s["json"]["source"]).name] = (split, s)
    skipped = {Path(e["source"]).name: e for e in manifest["skipped"]}
    converted = {Path(e["source"]).name: e for e in manifest["converted"]}
    for q in quirks:
        base = Path(q.rel).name
        if q.expect == "ignored":
            assert base not in stored and base not in skipped
            continue
        if q.expect == "skipped":
            assert base in skipped and q.reason in skipped[base]["reason"], q
            assert base not in stored
            continue
        split, s = stored[base]
        want_split = ("train", "val") if q.split == "train" else ("test",)
        assert split in want_split and s["json"]["wnid"] == q.wnid and WNIDS[s["cls"]] == q.wnid, q
        im = Image.open(io.BytesIO(s["jpg"]))
        assert im.format == "JPEG" and im.mode == "RGB"
        assert (s["json"]["width"], s["json"]["height"]) == im.size
        if q.expect == "converted":
            assert q.reason in s["json"]["reencoded"] and q.reason in converted[base]["reason"], q
        else:  # kept: the original bytes
            assert s["json"]["reencoded"] is None and s["jpg"] == (folders / q.rel).read_bytes(), q
    assert manifest["ignored"]["count"] >= sum(q.expect == "ignored" for q in quirks) - (name == "archives")


def test_dotted_stem_and_colliding_key_are_both_kept(layout_roots, class_file, tmp_path):
    out = tmp_path / "out"
    manifest = build(layout_roots["folders"], out, class_file, val_per_class=0)
    keys = [s["key"] for s in read_samples(out, manifest, "train")]
    assert len(keys) == len(set(keys))
    w = WNIDS[0]
    mine = {k.split("_", 1)[1] for k in keys if f"{w}_7_extra" in k}
    assert mine == {f"{w}_{w}_7_extra", f"{w}_{w}_7_extra_2"}
    assert manifest["splits"]["val"]["num_samples"] == 0 and "--val-per-class 0" in manifest["splits"]["val"]["note"]


def test_no_layout_matched_lists_the_layouts(tmp_path, class_file):
    (tmp_path / "src" / "images").mkdir(parents=True)
    with pytest.raises(BuildError, match="matches no ImageNet layout"):
        detect_layout(tmp_path / "src")
    with pytest.raises(BuildError) as exc:
        build(tmp_path / "src", tmp_path / "out", class_file)
    msg = str(exc.value)
    assert "matches no ImageNet layout" in msg and "images" in msg
    for layout in ("folders", "kaggle", "devkit", "archives"):
        assert f"{layout}" in msg
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_root_and_forced_wrong_layout(tmp_path, layout_roots, class_file):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build(tmp_path / "nope", tmp_path / "out", class_file)
    with pytest.raises(BuildError, match="ILSVRC2012_img_train.tar does not exist"):
        build(layout_roots["folders"], tmp_path / "out", class_file, layout="archives")


def test_missing_classes_error_or_allowed(tmp_path, class_file):
    src = tmp_path / "src"
    make_fake_imagenet(src, WNIDS[:2], SPEC)
    with pytest.raises(BuildError) as exc:
        build(src, tmp_path / "out", class_file)
    assert WNIDS[2] in str(exc.value) and WNIDS[3] in str(exc.value) and "--allow-missing" in str(exc.value)
    m = build(src, tmp_path / "out", class_file, allow_missing=True)
    assert m["missing_classes"] == WNIDS[2:]
    assert m["splits"]["train"]["per_class"][WNIDS[2]] == 0 and m["splits"]["train"]["per_class"][WNIDS[0]] == 3


def test_source_without_val_gives_empty_test_split_with_note(tmp_path, class_file, layout_roots):
    src = tmp_path / "src"
    shutil.copytree(layout_roots["folders"] / "train", src / "train")
    m = build(src, tmp_path / "out", class_file)
    assert m["splits"]["test"]["num_samples"] == 0 and m["splits"]["test"]["shards"] == []
    assert "no validation images" in m["splits"]["test"]["note"]
    assert m["splits"]["train"]["num_samples"] > 0
    info = json.loads((tmp_path / "out" / "_info.json").read_text())
    assert "test" not in info["splits"] and "train" in info["splits"]
    arch = to_archives(src, tmp_path / "arch", with_val=False)
    m2 = build(arch, tmp_path / "out2", class_file)
    assert m2["layout"] == "archives" and m2["splits"]["test"]["num_samples"] == 0


def test_flat_val_without_labels_is_an_error(tmp_path, layout_roots, class_file):
    src = tmp_path / "src"
    shutil.copytree(layout_roots["devkit"], src)
    shutil.rmtree(src / "ILSVRC2012_devkit_t12")
    with pytest.raises(BuildError, match="labels are missing"):
        build(src, tmp_path / "out", class_file)
    kag = tmp_path / "kag"
    shutil.copytree(layout_roots["kaggle"], kag)
    (kag / "LOC_val_solution.csv").unlink()
    with pytest.raises(BuildError, match="LOC_val_solution.csv is missing"):
        build(kag, tmp_path / "out2", class_file)


def test_devkit_val_image_without_ground_truth_is_listed(tmp_path, class_file, layout_roots):
    src = tmp_path / "src"
    to_devkit(layout_roots["folders"], src)
    shutil.copy(next((src / "val").glob("*.JPEG")), src / "val" / "ILSVRC2012_val_00099999.JPEG")
    m = build(src, tmp_path / "out", class_file)
    listed = [e for e in m["skipped"] if e["source"] == "val/ILSVRC2012_val_00099999.JPEG"]
    assert listed and listed[0]["split"] == "test" and "ground-truth" in listed[0]["reason"]
