"""Reading a VOCdevkit: annotations and the box convention, set specs and unions, root resolution, the
seeded val subset, and the torch dataset (difficult kept for evaluation and dropped for training, flips)."""
from __future__ import annotations

import pickle
import random

import pytest
import torch
from PIL import Image
from voc_helpers import copy_tree, fake_tree, xml_text

from imagenet52p.voc import (VOC_CLASSES, VOCDetectionDataset, box_to_voc, collate, load_images, parse_annotation,
                             parse_spec, resolve_devkit, split_val, targets_for_eval, train_val_images)
from imagenet52p.voc.dataset import flip_decision
from imagenet52p.voc.fake import make_fake_voc


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fake_tree(tmp_path_factory.mktemp("vocread"))


def _xml(tmp_path, text, name="000007"):
    path = tmp_path / f"{name}.xml"
    path.write_text(text)
    return path


def test_annotation_conversion_and_devkit_defaults(tmp_path):
    text = xml_text([("dog", 1, 2, 30, 40, "0"), ("person", 5, 6, 64, 48, "1"), ("cat", 3, 3, 3, 3, None)])
    image = parse_annotation(_xml(tmp_path, text), "2007")
    assert (image.image_id, image.year, image.name, image.width, image.height) == ("2007_000007", "2007", "000007",
                                                                                    64, 48)
    assert image.path == str((tmp_path.parent / "JPEGImages" / "000007.jpg").absolute())
    dog, person, cat = image.objects
    assert dog.box == (0.0, 1.0, 30.0, 40.0) and dog.label == VOC_CLASSES.index("dog") + 1 == 12
    assert person.box == (4.0, 5.0, 64.0, 48.0) and person.difficult and person.label == 15
    assert cat.box == (2.0, 2.0, 3.0, 3.0) and not cat.difficult  # missing <difficult> reads as 0
    assert cat.box[2] - cat.box[0] == 3 - 3 + 1  # our width = the devkit's xmax - xmin + 1
    assert [box_to_voc(o.box) for o in image.objects] == [(1, 2, 30, 40), (5, 6, 64, 48), (3, 3, 3, 3)]


@pytest.mark.parametrize("text,message", [
    ("<annotation><size>", "not readable XML"),
    (xml_text(size=False), "no <size>"),
    (xml_text().replace("<bndbox>", "<box>").replace("</bndbox>", "</box>"), "has no <bndbox>"),
    (xml_text([("unicorn", 1, 1, 5, 5, "0")]), "unknown class 'unicorn'; valid classes: aeroplane, bicycle"),
    (xml_text([("dog", 10, 1, 5, 5, "0")]), "xmin..xmax 10..5"),
    (xml_text([("dog", 1, 9, 5, 5, "0")]), "ymin..ymax 9..5"),
    (xml_text([("dog", 0, 1, 5, 5, "0")]), "outside the 64x48 image"),
    (xml_text([("dog", 1, 1, 65, 5, "0")]), "outside the 64x48 image"),
    (xml_text([("dog", 1, 1, 5, 49, "0")]), "outside the 64x48 image"),
    (xml_text([("dog", 1, 1, 5, "nan", "0")]), "<ymax> in <bndbox> of object 0 (dog) is 'nan'"),
    (xml_text([("dog", 1, 1, 5, 5, "2")]), "expected 0 or 1"),
    (xml_text(width="64.5"), "expected an integer"),
])
def test_malformed_annotation_is_refused_naming_the_file(tmp_path, text, message):
    path = _xml(tmp_path, text)
    with pytest.raises(ValueError) as info:
        parse_annotation(path, "2007")
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_coordinate_round_trip_on_the_generated_tree(tree):
    """Generator's XML integers -> our boxes -> devkit integers, for every object of every set."""
    images = load_images(tree.devkit, "2007-trainval+2007-test+2012-trainval")
    assert len(images) == 52
    for image in images:
        drawn = tree.objects[image.year, image.name]
        assert [box_to_voc(o.box) for o in image.objects] == [(d.xmin, d.ymin, d.xmax, d.ymax) for d in drawn]
        assert [o.box[2] - o.box[0] for o in image.objects] == [d.xmax - d.xmin + 1 for d in drawn]
        assert [(o.difficult, o.truncated) for o in image.objects] == [(d.difficult, d.truncated) for d in drawn]


def test_specs_unions_and_order(tree):
    assert parse_spec("07+12") == parse_spec("2007-trainval+2012-trainval") == (("2007", "trainval"),
                                                                                ("2012", "trainval"))
    assert parse_spec("07") == (("2007", "trainval"),)
    union = load_images(tree.devkit, "07+12")
    assert [i.image_id for i in union] == ([f"2007_{i}" for i in tree.sets["2007", "trainval"]] +
                                           [f"2012_{i}" for i in tree.sets["2012", "trainval"]])
    other = [i.image_id for i in load_images(tree.devkit, "2007-val+2007-train")]
    assert other == [f"2007_{i}" for i in tree.sets["2007", "val"] + tree.sets["2007", "train"]]
    for bad, message in [("2012-test", "not public"), ("2007-tranval", "unknown part '2007-tranval'"),
                         ("07+2007-trainval", "names 2007-trainval twice"), ("2010-trainval", r"e.g. 07\+12")]:
        with pytest.raises(ValueError, match=message):
            parse_spec(bad)
    with pytest.raises(ValueError, match="2007_0000.. is in both 2007-train and 2007-trainval"):
        load_images(tree.devkit, "2007-train+2007-trainval")


@pytest.mark.parametrize("line", ["../../../etc/passwd", "/etc/passwd", "a/b", "000001 1", "..", ".hidden"])
def test_an_id_that_could_escape_the_root_is_refused(tree, tmp_path, line):
    devkit = copy_tree(tree, tmp_path)
    lst = devkit / "VOC2007" / "ImageSets" / "Main" / "val.txt"
    lst.write_text(lst.read_text() + line + "\n")
    with pytest.raises(ValueError, match=f"{lst}:11: image id .* is not a plain name"):
        load_images(devkit, "2007-val")


def test_root_resolution_says_what_to_pass(tree, tmp_path):
    assert resolve_devkit(tree.devkit) == tree.devkit
    assert resolve_devkit(tree.devkit.parent) == tree.devkit  # torchvision's root, accepted silently
    assert len(load_images(tree.devkit.parent, "2007-test")) == 12
    with pytest.raises(FileNotFoundError, match=f"one year's folder; pass its parent {tree.devkit} "):
        load_images(tree.devkit / "VOC2007", "07")
    with pytest.raises(FileNotFoundError, match=f"holds no VOCdevkit/ but {tree.devkit} exists; pass {tree.devkit}"):
        resolve_devkit(tree.devkit.parent.parent)
    with pytest.raises(FileNotFoundError, match="does not exist .*a VOCdevkit must contain"):
        resolve_devkit(tmp_path / "nope")
    devkit = copy_tree(tree, tmp_path)
    (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Main/test.txt is missing \(VOC2007's test set is the separate"):
        load_images(devkit, "2007-test")
    (devkit / "VOC2007" / "Annotations" / f"{tree.sets['2007', 'val'][3]}.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"\.xml is missing \(image .* is listed in .*val.txt:4\)"):
        load_images(devkit, "2007-val")
    with pytest.raises(FileNotFoundError, match="VOC2012/JPEGImages is missing"):
        (devkit / "VOC2012" / "JPEGImages").rename(devkit / "VOC2012" / "jpegs")
        load_images(devkit, "12")


def test_split_val_is_exact_seeded_and_order_independent(tree):
    images = load_images(tree.devkit, "07+12")
    train, val = split_val(images, 7, seed=0)
    assert len(val) == 7 and len(train) == 33
    assert {i.image_id for i in train} | {i.image_id for i in val} == {i.image_id for i in images}
    assert train == [i for i in images if i in train] and val == [i for i in images if i in val]  # order kept
    assert split_val(images, 7, seed=0) == (train, val)
    shuffled = images[:]
    random.Random(5).shuffle(shuffled)
    assert {i.image_id for i in split_val(shuffled, 7, seed=0)[1]} == {i.image_id for i in val}
    assert {i.image_id for i in split_val(images, 7, seed=1)[1]} != {i.image_id for i in val}
    for bad in (0, 40, -1, 2.0, True):
        with pytest.raises(ValueError, match="0 < count < 40"):
            split_val(images, bad, seed=0)
    with pytest.raises(ValueError, match="images repeat"):
        split_val(images + images[:1], 3, seed=0)
    assert train_val_images(tree.devkit, "07+12", 7, seed=0) == (train, val)
    with pytest.raises(ValueError, match="contains a test set"):
        train_val_images(tree.devkit, "2007-trainval+2007-test", 7)


def test_eval_items_keep_difficult_and_training_items_drop_it(tree):
    images = load_images(tree.devkit, "2007-trainval+2007-test")
    with_difficult = [k for k, i in enumerate(images) if any(o.difficult for o in i.objects)]
    assert with_difficult
    evaluation, training = VOCDetectionDataset(images, train=False), VOCDetectionDataset(images, train=True)
    truth, train_targets = targets_for_eval(images), {}
    for k in range(len(images)):
        image, target = evaluation[k]
        assert image.dtype == torch.float32 and image.shape == (3, images[k].height, images[k].width)
        assert 0 <= image.min() and image.max() <= 1 and image.max() > 0.5
        assert target["difficult"].tolist() == [o.difficult for o in images[k].objects]
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["size"].tolist() == [images[k].height, images[k].width]
        for key in ("boxes", "labels", "difficult", "size"):
            assert torch.equal(target[key], truth[k][key])
        train_target = train_targets[k] = training[k][1]
        keep = [not o.difficult for o in images[k].objects]
        assert train_target["labels"].tolist() == [o.label for o, kk in zip(images[k].objects, keep) if kk]
        assert not train_target["difficult"].any() and train_target["image_id"] == images[k].image_id
    n_difficult = sum(o.difficult for i in images for o in i.objects)
    assert n_difficult > 0 and sum(len(t["labels"]) for t in truth) == n_difficult + sum(
        len(t["labels"]) for t in train_targets.values())


def test_flips_are_deterministic_per_epoch_and_mirror_image_and_boxes(tree):
    images = load_images(tree.devkit, "07")
    ds, plain = VOCDetectionDataset(images, train=True, seed=3), VOCDetectionDataset(images, train=False)
    flips = {}
    for epoch in range(4):
        ds.set_epoch(epoch)
        flips[epoch] = [ds.is_flipped(k) for k in range(len(ds))]
    assert flips == {e: [flip_decision(3, e, i.image_id) for i in images] for e in range(4)}
    assert len({tuple(v) for v in flips.values()}) == 4 and 0.2 < sum(map(sum, flips.values())) / 80 < 0.8
    assert not VOCDetectionDataset(images, train=True, seed=3, flip=False).is_flipped(flips[0].index(True))
    ds.set_epoch(2)
    for k in range(len(ds)):
        image, target = ds[k]
        ref_image, ref_target = plain[k]
        keep = ~ref_target["difficult"]
        w = images[k].width
        if flips[2][k]:
            assert torch.equal(image, ref_image.flip(-1))
            expected = ref_target["boxes"][keep][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
                [w, 0, w, 0])
            assert torch.equal(target["boxes"], expected)
        else:
            assert torch.equal(image, ref_image) and torch.equal(target["boxes"], ref_target["boxes"][keep])
    with pytest.raises(ValueError, match="epoch -1"):
        ds.set_epoch(-1)


def test_all_difficult_image_gives_an_empty_target_that_faster_rcnn_trains_on(tmp_path):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    fake = make_fake_voc(tmp_path, years=("2007",), trainval=2, test=0, difficult_fraction=1.0, seed=2)
    images = load_images(fake.devkit, "07")
    ds = VOCDetectionDataset(images, train=True)
    batch, targets = collate([ds[0], ds[1]])
    assert [t["boxes"].shape for t in targets] == [(0, 4), (0, 4)] and isinstance(batch, list)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU())
    backbone.out_channels = 8
    torch.manual_seed(0)
    model = FasterRCNN(backbone, num_classes=21, min_size=96, max_size=160,
                       rpn_anchor_generator=AnchorGenerator(((16, 32),), ((1.0,),)))
    losses = model.train()(batch, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box_reg"] == 0
    assert pickle.loads(pickle.dumps(collate)) is collate and len(pickle.loads(pickle.dumps(ds))) == 2


def test_a_jpeg_whose_size_differs_from_its_xml_is_refused(tree, tmp_path):
    devkit = copy_tree(tree, tmp_path)
    image = load_images(devkit, "2007-test")[0]
    Image.new("RGB", (image.width + 1, image.height)).save(image.path, format="JPEG")
    with pytest.raises(ValueError, match=f"{image.path}: JPEG is {image.width + 1}x{image.height} but its annot"):
        VOCDetectionDataset([image], train=False)[0]
    with pytest.raises(ValueError, match="no images"):
        VOCDetectionDataset([], train=False)
