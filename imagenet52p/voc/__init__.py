"""PASCAL VOC detection data: annotations, set specs, a torch dataset, verify and a synthetic tree.

See docs/voc.md.  ``import imagenet52p.voc`` loads neither torch nor PIL; the dataset names
(:class:`VOCDetectionDataset`, :func:`collate`, :func:`targets_for_eval`) import torch on first use.
"""

from .annotations import VOC_CLASSES, VOCImage, VOCObject, box_to_voc, parse_annotation, voc_to_box
from .sets import load_images, parse_spec, resolve_devkit, split_val, train_val_images

_LAZY = {"VOCDetectionDataset": "dataset", "collate": "dataset", "targets_for_eval": "dataset",
         "flip_decision": "dataset", "verify_voc": "verify", "VOCReport": "verify", "make_fake_voc": "fake"}
__all__ = ["VOC_CLASSES", "VOCImage", "VOCObject", "box_to_voc", "parse_annotation", "voc_to_box", "load_images",
           "parse_spec", "resolve_devkit", "split_val", "train_val_images", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'imagenet52p.voc' has no attribute {name!r}")
