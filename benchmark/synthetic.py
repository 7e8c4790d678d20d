"""In-memory synthetic classification data for tests, demos and CPU timing.

``synthetic_splits(num_classes, per_class, ...)`` renders class-dependent images
with :func:`imagenet52p.fake.render_image` (each class has its own colour,
grating and blob, so a small CNN learns them) and returns ``TensorDataset``s of
float images normalised to zero mean / unit scale and integer labels.  Output is
a pure function of the arguments.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset



def synthetic_wnids(num_classes: int) -> list[str]:
    """Fake WordNet ids ``n90000000``, ``n90000001``... (never real synsets)."""
    return [f"n9{i:07d}" for i in range(num_classes)]


def synthetic_dataset(num_classes: int, per_class: int, split: str = "train", size: int = 32, seed: int = 0,
                      noise: float = 12.0) -> TensorDataset:
    """``per_class`` images of each of ``num_classes`` classes, ``(3, size, size)`` float32, label = class index."""
    from imagenet52p.fake import FakeSpec, render_image  # the data floor's image generator, for tests and demos

    spec = FakeSpec(width=size, height=size, seed=seed, noise=noise)
    xs, ys = [], []
    for c, wnid in enumerate(synthetic_wnids(num_classes)):
        for i in range(per_class):
            xs.append(render_image(wnid, i, spec, split))
            ys.append(c)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return TensorDataset(x.contiguous(), torch.tensor(ys, dtype=torch.long))


def synthetic_splits(num_classes: int = 10, per_class: int = 40, val_per_class: int = 10, test_per_class: int = 10,
                     size: int = 32, seed: int = 0, noise: float = 12.0):
    """``(train, val, test)`` TensorDatasets with disjoint images (different split names)."""
    return (synthetic_dataset(num_classes, per_class, "train", size, seed, noise),
            synthetic_dataset(num_classes, val_per_class, "val", size, seed, noise),
            synthetic_dataset(num_classes, test_per_class, "test", size, seed, noise))


def pretrain(model, train: TensorDataset, epochs: int = 4, lr: float = 0.05, batch_size: int = 32, seed: int = 0):
    """Train ``model`` on ``train`` (SGD momentum 0.9, cosine LR) on CPU: the "pretrained"
    network that tests and demos then prune.  Deterministic for a given seed."""
    from pruning.loop.data import DataStream
    from pruning.loop.train import Runtime, lr_at, make_optimizer, train_chunk

    torch.manual_seed(seed)
    rt = Runtime.create("cpu")
    stream = DataStream(train, batch_size, seed=seed, name="pretrain")
    opt = make_optimizer(model, lr, 0.9, 5e-4)
    n = stream.pass_images
    for e in range(epochs):
        train_chunk(model, stream, e, n, opt, rt, lr_fn=lambda t, e=e: lr_at(e * n + t, epochs * n, lr, "cosine", n))
    return model.eval()
