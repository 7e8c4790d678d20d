"""The ``build-imagenet52p`` shard builder (the writer side of docs/FORMAT.md; docs/builder.md).

``build_dataset(BuildConfig(root, out, ...)) -> manifest`` turns any ImageNet copy (folders,
Kaggle, devkit, or the official tar archives) into deterministic, verified, resumable webdataset
shards; ``verify_build(out) -> [problems]`` re-checks a build.

Modules: :mod:`.config` (options, errors, build identity), :mod:`.layouts` / :mod:`.archives` /
:mod:`.sources` (finding the images of each input layout), :mod:`.assign` (samples to splits, keys
and shards), :mod:`.images` (checks and re-encoding), :mod:`.writer` (one shard), :mod:`.manifest`
(writing the manifest), :mod:`.run` (the whole build, resumable).  Reading and verifying a build
is :mod:`imagenet52p.format`, shared with the dataset.
"""

from ..format import load_manifest, verify_build
from ..summary import format_summary
from .config import LAYOUTS, SPLITS, BuildConfig, BuildError
from .run import BuildResult, build_dataset, run_build

__all__ = ["BuildConfig", "BuildError", "BuildResult", "LAYOUTS", "SPLITS", "build_dataset", "format_summary",
           "load_manifest", "run_build", "verify_build"]
