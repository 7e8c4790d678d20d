"""VOC images as a torch map-style dataset for torchvision's detectors.

Item ``(image, target)``: ``image`` float32 ``(3, H, W)`` = RGB pixels / 255 (no normalisation, no
resize: torchvision's ``GeneralizedRCNNTransform`` does both); ``target`` a dict with ``boxes`` float32
``(N, 4)`` (``x1, y1, x2, y2``, see :mod:`imagenet52p.voc.annotations`), ``labels`` int64 ``(N,)`` in
1..20, ``difficult`` bool ``(N,)``, ``image_id`` str (``"2007_000005"``) and ``size`` int64 ``(2,)`` =
``(H, W)`` of the original image.

Training (``train=True``): difficult objects are dropped from the target (py-faster-rcnn's default), and
the image is flipped horizontally when :func:`flip_decision` says so, i.e. when the first byte of
``sha256(f"{seed}:{epoch}:{image_id}")`` is odd (about half the images, a different half each epoch;
call :meth:`VOCDetectionDataset.set_epoch` before each epoch; with ``persistent_workers`` the workers
keep the epoch they were started with).  A flipped box is ``x1' = W - x2, x2' = W - x1`` (``y`` kept).
An image whose objects are all difficult keeps its place with an empty target (``boxes`` of shape
``(0, 4)``), which torchvision's ``FasterRCNN`` accepts as background-only.

Evaluation (``train=False``): every object, difficult ones flagged, never flipped; the targets equal
:func:`targets_for_eval` (which reads no JPEG), the ground truth for the VOC metric.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .annotations import VOCImage


def flip_decision(seed: int, epoch: int, image_id: str) -> bool:
    """Whether a training image is flipped: the first byte of ``sha256(f"{seed}:{epoch}:{image_id}")`` is odd."""
    return hashlib.sha256(f"{seed}:{epoch}:{image_id}".encode()).digest()[0] % 2 == 1


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes of the horizontally mirrored image: ``x1' = W - x2``, ``x2' = W - x1``."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def make_target(image: VOCImage, keep_difficult: bool) -> dict:
    """The target dict of one image (all objects, or the non-difficult ones only)."""
    objs = [o for o in image.objects if keep_difficult or not o.difficult]
    boxes = torch.tensor([o.box for o in objs], dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes,
            "labels": torch.tensor([o.label for o in objs], dtype=torch.int64),
            "difficult": torch.tensor([o.difficult for o in objs], dtype=torch.bool),
            "image_id": image.image_id,
            "size": torch.tensor([image.height, image.width], dtype=torch.int64)}


def targets_for_eval(images) -> list[dict]:
    """Ground truth of ``images`` straight from their annotations (difficult kept and flagged)."""
    return [make_target(im, keep_difficult=True) for im in images]


def load_image(image: VOCImage) -> torch.Tensor:
    """The JPEG as float32 ``(3, H, W)`` in [0, 1]; ``ValueError`` if its size differs from the XML's."""
    with Image.open(image.path) as pil:
        rgb = pil.convert("RGB")
    if rgb.size != (image.width, image.height):
        raise ValueError(f"{image.path}: JPEG is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
                         f"{image.width}x{image.height}; run `imagenet52p voc verify` on the VOCdevkit")
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def collate(batch):
    """``[(image, target), ...]`` -> ``(list of images, list of targets)`` (torchvision detectors' input)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


class VOCDetectionDataset(Dataset):
    """``images`` (from :func:`imagenet52p.voc.load_images`) as ``(image, target)`` items; see the module doc."""

    def __init__(self, images, train: bool, seed: int = 0, flip: bool = True):
        self.images = list(images)
        if not self.images:
            raise ValueError("VOCDetectionDataset: no images; expected the non-empty list of load_images(root, spec)")
        if not all(isinstance(im, VOCImage) for im in self.images):
            raise ValueError("VOCDetectionDataset: expected VOCImage items (from imagenet52p.voc.load_images)")
        self.train, self.seed, self.flip, self.epoch = bool(train), int(seed), bool(flip), 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose flips :meth:`__getitem__` applies (training only)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"set_epoch: epoch {epoch!r}, expected an integer >= 0")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def is_flipped(self, index: int) -> bool:
        """Whether item ``index`` is mirrored in the current epoch."""
        return self.train and self.flip and flip_decision(self.seed, self.epoch, self.images[index].image_id)

    def __getitem__(self, index: int):
        image = self.images[index]
        pixels = load_image(image)
        target = make_target(image, keep_difficult=not self.train)
        if self.is_flipped(index):
            pixels = pixels.flip(-1)
            target["boxes"] = flip_boxes(target["boxes"], image.width)
        return pixels, target

    def __repr__(self) -> str:
        n_obj = sum(len(im.objects) for im in self.images)
        mode = f"train, seed={self.seed}, flip={self.flip}, epoch={self.epoch}" if self.train else "eval"
        return f"VOCDetectionDataset({len(self)} images, {n_obj} objects, {mode})"
