"""Synthetic ImageNet trees for tests, demos and benchmarks.

Each class gets its own look (a hue, a grating orientation and frequency, a blob
position), and each image jitters it (phase, contrast, noise, shift), so a small
CNN can learn the classes and pruning experiments show real damage and recovery.
Output is a function of ``(wnids, counts, size, seed)`` only: the same call gives
byte-identical files.

Layout ``folders`` (torchvision's processed layout)::

    root/train/<wnid>/<wnid>_<i>.JPEG
    root/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FakeSpec:
    train_per_class: int = 8
    val_per_class: int = 2
    width: int = 64
    height: int = 48
    seed: int = 0
    quality: int = 90
    noise: float = 12.0  # std of per-pixel noise (higher = bigger JPEGs, e.g. 40 for ~100 KB at 500x375)


def _class_params(wnid: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{wnid}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def class_style(wnid: str, seed: int = 0) -> dict:
    """The deterministic look of a class: colour, grating angle/frequency, blob centre."""
    rng = _class_params(wnid, seed)
    return {
        "color": rng.uniform(40, 215, size=3),
        "angle": rng.uniform(0, np.pi),
        "freq": rng.uniform(2.0, 7.0),
        "blob": rng.uniform(0.25, 0.75, size=2),
    }


def render_image(wnid: str, i: int, spec: FakeSpec, split: str = "train") -> np.ndarray:
    """One HxWx3 uint8 image of class ``wnid`` (index ``i`` within its split)."""
    style = class_style(wnid, spec.seed)
    rng = _class_params(f"{wnid}/{split}/{i}", spec.seed)
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    angle = style["angle"] + rng.normal(0, 0.08)
    phase = rng.uniform(0, 2 * np.pi)
    grating = np.sin(2 * np.pi * style["freq"] * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    cy, cx = style["blob"] + rng.normal(0, 0.06, size=2)
    blob = np.exp(-(((yy - cy) ** 2) + ((xx - cx) ** 2)) / 0.02)
    contrast = rng.uniform(35, 70)
    img = style["color"][None, None, :] + contrast * grating[..., None] + 60 * blob[..., None]
    img = img + rng.normal(0, spec.noise, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def fake_samples(wnids: list[str], spec: FakeSpec):
    """Yield ``(split, wnid, filename, jpeg_bytes)`` in a fixed order (the folders layout's names)."""
    val_counter = 0
    for wnid in sorted(wnids):
        for i in range(spec.train_per_class):
            yield "train", wnid, f"{wnid}_{i}.JPEG", encode_jpeg(render_image(wnid, i, spec, "train"), spec.quality)
    for wnid in sorted(wnids):
        for i in range(spec.val_per_class):
            val_counter += 1
            yield "val", wnid, f"ILSVRC2012_val_{val_counter:08d}.JPEG", encode_jpeg(
                render_image(wnid, i, spec, "val"), spec.quality)


def make_fake_imagenet(root: str | Path, wnids: list[str], spec: FakeSpec | None = None) -> Path:
    """Write a ``folders``-layout tree under ``root`` and return ``root``."""
    spec = spec or FakeSpec()
    root = Path(root)
    for split, wnid, name, data in fake_samples(list(wnids), spec):
        d = root / split / wnid
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return root
