"""ImageNet-52P: the PASCAL VOC classes of ImageNet as verified webdataset shards.

``from imagenet52p import ImageNet52P`` is the dataset entry point. The dataset classes are
imported on first use, so ``import imagenet52p`` (and the CLIs) stay light (no torch import).
"""

from ._version import __version__

_LAZY = {"ImageNet52P": "dataset", "ImageNetShards": "dataset", "SampleError": "dataset"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'imagenet52p' has no attribute {name!r}")
