"""Shared parts of the detector trainer and direct-prune tests (import with ``from detector_helpers import ...``):
a 3-class synthetic VOC2007 and a tiny detector with dropout in its box head."""

from __future__ import annotations

import pytest
import torch

from imagenet52p.voc import VOCDetectionDataset, load_images, make_fake_voc, split_val
from pruning.detection.model import make_detector
from pruning.loop.models import TinyVGG

CLASSES = ("aeroplane", "bicycle", "bird")  # labels 1..3 (VOC order)
FAST = dict(min_size=96, max_size=128)  # tiny preset at a smaller input: the default suite's budget


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """(train, val, test) datasets of a 3-class synthetic VOC2007: 24 trainval (18 train + 6 val), 8 test."""
    root = tmp_path_factory.mktemp("voc")
    make_fake_voc(root, years=("2007",), trainval=24, test=8, classes=CLASSES, size=(80, 112), seed=0)
    train, val = split_val(load_images(root, "2007-trainval"), 6, seed=0)
    return (VOCDetectionDataset(train, train=True, seed=0), VOCDetectionDataset(val, train=False),
            VOCDetectionDataset(load_images(root, "2007-test"), train=False))


def tiny_detector(seed: int = 0, dropout: float = 0.5, **overrides):
    """A tiny detector with dropout in its box head (so resume identity covers the dropout RNG)."""
    torch.manual_seed(seed)
    return make_detector("tinyvgg", num_classes=len(CLASSES) + 1, preset="tiny",
                         classifier=TinyVGG(1000, dropout=dropout), **{**FAST, **overrides})
