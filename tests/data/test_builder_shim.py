"""The deprecated ``imagenet52p.build`` module (the builder moved to ``imagenet52p.builder``) still
gives the names the README showed, the same objects, with a DeprecationWarning naming the new home."""
import importlib
import sys

import pytest

import imagenet52p.builder as builder
import imagenet52p.format as fmt


def test_the_old_import_works_and_warns(monkeypatch):
    monkeypatch.delitem(sys.modules, "imagenet52p.build", raising=False)
    with pytest.warns(DeprecationWarning, match=r"imagenet52p\.builder"):
        old = importlib.import_module("imagenet52p.build")
    from imagenet52p.build import BuildConfig, BuildError, build_dataset, verify_build  # the README's line
    assert (BuildConfig, BuildError, build_dataset, verify_build) == (
        builder.BuildConfig, builder.BuildError, builder.build_dataset, builder.verify_build)
    assert set(old.__all__) == set(builder.__all__)
    assert all(getattr(old, n) is getattr(builder, n) for n in builder.__all__)


def test_the_builder_and_the_reader_share_one_format():
    assert builder.load_manifest is fmt.load_manifest and builder.verify_build is fmt.verify_build
    assert builder.SPLITS is fmt.SPLITS
    from imagenet52p import dataset
    assert dataset.load_manifest is fmt.load_manifest and dataset.file_sha256 is fmt.file_sha256
