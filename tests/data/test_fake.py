"""The synthetic ImageNet generator: layout, determinism, and class-dependent (learnable) content."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from imagenet52p.fake import FakeSpec, make_fake_imagenet, render_image

WNIDS = ["n01440764", "n02123045", "n02690373", "n04591713"]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_determinism(tmp_path):
    spec = FakeSpec(train_per_class=3, val_per_class=2, seed=7)
    a = _digest(make_fake_imagenet(tmp_path / "a", WNIDS, spec))
    b = _digest(make_fake_imagenet(tmp_path / "b", WNIDS, spec))
    assert a == b
    assert len(a) == len(WNIDS) * 5
    assert "train/n01440764/n01440764_0.JPEG" in a
    assert "val/n01440764/ILSVRC2012_val_00000001.JPEG" in a
    assert "val/n04591713/ILSVRC2012_val_00000008.JPEG" in a
    c = _digest(make_fake_imagenet(tmp_path / "c", WNIDS, FakeSpec(train_per_class=3, val_per_class=2, seed=8)))
    assert c.keys() == a.keys() and c != a
    with Image.open(tmp_path / "a/train/n02123045/n02123045_2.JPEG") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 48)


def test_classes_are_learnable():
    """A nearest-centroid classifier on 8x8 thumbnails separates the classes far above chance."""
    spec = FakeSpec(seed=0)

    def feats(wnid, i, split):
        img = Image.fromarray(render_image(wnid, i, spec, split)).resize((8, 8), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32).ravel()

    wnids = WNIDS + ["n02084071", "n03792782", "n04146614", "n01514859"]
    centroids = np.stack([np.mean([feats(w, i, "train") for i in range(20)], axis=0) for w in wnids])
    correct = total = 0
    for k, w in enumerate(wnids):
        for i in range(10):
            pred = np.argmin(((centroids - feats(w, i, "val")) ** 2).sum(1))
            correct += int(pred == k)
            total += 1
    assert correct / total > 0.6, correct / total  # chance is 1/8


def test_script(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_fake_imagenet.py"
    lst = tmp_path / "two.txt"
    lst.write_text("n01440764\nn02123045\n")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "tree"), "--classes", str(lst),
                          "--train-per-class", "2", "--val-per-class", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "tree").rglob("*.JPEG"))) == 6 and "wrote 6 images" in out.stdout
