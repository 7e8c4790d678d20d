"""The synthetic VOCdevkit: devkit layout, byte determinism, torchvision's VOCDetection reading it unchanged
(its boxes equal ours through the documented conversion), and class-dependent (learnable) content."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import VOCDetection
from voc_helpers import digest, fake_tree

from imagenet52p.voc import VOC_CLASSES, load_images, voc_to_box
from imagenet52p.voc.fake import make_fake_voc


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fake_tree(tmp_path_factory.mktemp("vocfake"))


def test_same_call_writes_identical_bytes_and_the_seed_matters(tmp_path):
    args = dict(years=("2007", "2012"), trainval=20, test=20, seed=3)
    t0 = time.perf_counter()
    a = digest(make_fake_voc(tmp_path / "a", **args).devkit)
    seconds = time.perf_counter() - t0
    b = digest(make_fake_voc(tmp_path / "b", **args).devkit)
    assert a == b
    assert len(a) == 2 * (40 + 20) + 4 + 3  # JPEG + XML per image, 4 lists for 2007, 3 for 2012
    c = digest(make_fake_voc(tmp_path / "c", **{**args, "seed": 4}).devkit)
    assert c.keys() == a.keys() and all(c[k] != a[k] for k in a if k.endswith(".jpg"))
    assert seconds < 10, seconds  # ~0.3 s here; the budget in the brief is "well under 2 s"


def test_devkit_layout_and_lists(tree):
    main7 = tree.devkit / "VOC2007" / "ImageSets" / "Main"
    lists = {p.stem: p.read_text().split("\n") for p in sorted(main7.glob("*.txt"))}
    assert sorted(lists) == ["test", "train", "trainval", "val"]
    assert all(v[-1] == "" for v in lists.values())  # one id per line, newline-terminated
    train, val, trainval, test = (set(lists[k][:-1]) for k in ("train", "val", "trainval", "test"))
    assert train | val == trainval and not train & val and not trainval & test
    assert (len(trainval), len(test)) == (20, 12)
    assert sorted(lists["trainval"][:-1]) == lists["trainval"][:-1]
    assert sorted(p.stem for p in (tree.devkit / "VOC2012" / "ImageSets" / "Main").glob("*.txt")) == [
        "train", "trainval", "val"]
    assert "2012_000001" in tree.sets["2012", "trainval"] + tree.sets["2012", "train"]
    for (year, image), (w, h) in tree.sizes.items():
        base = tree.devkit / f"VOC{year}"
        with Image.open(base / "JPEGImages" / f"{image}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (w, h)
            assert 96 <= w <= 160 and 96 <= h <= 160
        assert (base / "Annotations" / f"{image}.xml").is_file()


@pytest.mark.parametrize("year,image_set", [("2007", "trainval"), ("2007", "test"), ("2012", "trainval")])
def test_torchvision_vocdetection_reads_the_tree_and_agrees_with_our_boxes(tree, year, image_set):
    tv = VOCDetection(str(tree.devkit.parent), year=year, image_set=image_set, download=False)
    ours = load_images(tree.devkit, f"{year}-{image_set}")
    assert len(tv) == len(ours) == len(tree.sets[year, image_set])
    for k, image in enumerate(ours):
        pil, target = tv[k]
        ann = target["annotation"]
        assert ann["filename"] == f"{image.name}.jpg" and pil.size == (image.width, image.height)
        assert (int(ann["size"]["width"]), int(ann["size"]["height"])) == (image.width, image.height)
        tv_boxes = [voc_to_box(*(float(o["bndbox"][t]) for t in ("xmin", "ymin", "xmax", "ymax")))
                    for o in ann["object"]]
        assert tv_boxes == [o.box for o in image.objects]
        assert [o["name"] for o in ann["object"]] == [o.name for o in image.objects]
        assert [o["difficult"] == "1" for o in ann["object"]] == [o.difficult for o in image.objects]


def test_difficult_and_truncated_objects_exist_and_truncated_ones_touch_the_border(tree):
    objs = [(o, tree.sizes[key]) for key, v in tree.objects.items() for o in v]
    assert all(1 <= len(v) <= 3 for v in tree.objects.values())
    n_diff, n_trunc = sum(o.difficult for o, _ in objs), sum(o.truncated for o, _ in objs)
    assert 0 < n_diff < len(objs) // 2 and 0 < n_trunc < len(objs) // 2, (n_diff, n_trunc, len(objs))
    for o, (w, h) in objs:
        assert 1 <= o.xmin <= o.xmax <= w and 1 <= o.ymin <= o.ymax <= h
        if o.truncated:
            assert o.xmin == 1 or o.ymin == 1 or o.xmax == w or o.ymax == h, o


def test_objects_are_learnable_from_their_boxes(tmp_path):
    """Nearest-centroid on 8x8 crops of the non-difficult boxes: trainval centroids classify test crops."""
    classes = ("aeroplane", "cat", "dog", "person", "train", "tvmonitor")
    fake = make_fake_voc(tmp_path, years=("2007",), trainval=40, test=30, classes=classes, seed=1)

    def crops(split):
        for image in fake.sets["2007", split]:
            with Image.open(fake.devkit / "VOC2007" / "JPEGImages" / f"{image}.jpg") as im:
                rgb = im.convert("RGB")
            for o in fake.objects["2007", image]:
                if not o.difficult:
                    crop = rgb.crop((o.xmin - 1, o.ymin - 1, o.xmax, o.ymax)).resize((8, 8), Image.BILINEAR)
                    yield classes.index(o.name), np.asarray(crop, dtype=np.float32).ravel()

    train = list(crops("trainval"))
    centroids = np.stack([np.mean([f for c, f in train if c == k], axis=0) for k in range(len(classes))])
    test = list(crops("test"))
    correct = sum(int(np.argmin(((centroids - f) ** 2).sum(1)) == c) for c, f in test)
    assert len(test) >= 30 and correct / len(test) > 0.6, correct / len(test)  # chance: 1/6


def test_generator_refuses_bad_arguments_and_a_non_empty_tree(tmp_path, tree):
    with pytest.raises(ValueError, match="classes.*expected distinct names of aeroplane"):
        make_fake_voc(tmp_path / "x", classes=("dog", "unicorn"))
    with pytest.raises(ValueError, match="trainval >= 2"):
        make_fake_voc(tmp_path / "x", trainval=1)
    with pytest.raises(ValueError, match="year '2010'"):
        make_fake_voc(tmp_path / "x", years=("2010",))
    with pytest.raises(FileExistsError, match="VOC2007 already exists and is not empty"):
        make_fake_voc(tree.devkit.parent)
    assert set(VOC_CLASSES) >= {o.name for v in tree.objects.values() for o in v}
