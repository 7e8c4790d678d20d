"""The same shards read by timm's webdataset reader (via _info.json) and by webdataset.WebDataset give the
same images and labels as ImageNet52P."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_helpers import manifest

from imagenet52p import ImageNet52P


@pytest.mark.parametrize("split", ["train", "test"])
def test_timm_reader_same_images_and_labels(built, split):
    timm_data = pytest.importorskip("timm.data")
    _, out = built
    theirs = list(timm_data.create_dataset("wds/imagenet52p", root=str(out), split=split, is_training=False))
    ours = list(ImageNet52P(out, split, shuffle=False))
    assert len(theirs) == len(ours) == manifest(out)["splits"][split]["num_samples"]
    for (ti, tl), (oi, ol) in zip(theirs, ours):  # both read shards in manifest order, samples in tar order
        assert tl == ol
        assert np.array_equal(np.asarray(ti), np.asarray(oi))


def test_webdataset_pipeline_same_labels(built):
    wds = pytest.importorskip("webdataset")
    _, out = built
    urls = [str(out / s["path"]) for s in manifest(out)["splits"]["train"]["shards"]]
    pipeline = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "cls", "json")
    theirs = {key: (int(label), meta["wnid"], np.asarray(img)) for key, img, label, meta in pipeline}
    ours = list(ImageNet52P(out, "train", with_meta=True, seed=5))
    assert len(theirs) == len(ours) == 40
    for img, label, meta in ours:
        t_label, t_wnid, t_img = theirs[meta["key"]]
        assert (label, meta["wnid"]) == (t_label, t_wnid)
        assert np.array_equal(np.asarray(img), t_img)
